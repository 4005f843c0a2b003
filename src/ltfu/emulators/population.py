"""A seeded Kenyan-like community: places and CHT person docs, and a facility's view of some of them.

Used by the matching benchmark and to seed the emulators. Names follow Kenyan patterns (a Christian or
Muslim first name, an ethnic name, a family name) with a Zipf frequency skew and a long tail; households of
3–7 share a phone; about 20% of birth dates are year-only or approximate, about 15% of persons carry a
client-registry UPI, and some households have twins with near-identical names (Wanjiku/Wanjiru).
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CHRISTIAN_F = [
    "Mary",
    "Grace",
    "Faith",
    "Mercy",
    "Jane",
    "Esther",
    "Ruth",
    "Caroline",
    "Winnie",
    "Lucy",
    "Ann",
    "Joyce",
    "Beatrice",
    "Susan",
    "Elizabeth",
    "Margaret",
    "Nancy",
    "Rose",
    "Purity",
    "Sharon",
    "Diana",
    "Irene",
    "Josephine",
    "Agnes",
    "Eunice",
    "Lilian",
    "Christine",
    "Brenda",
    "Janet",
    "Emily",
]
CHRISTIAN_M = [
    "John",
    "Peter",
    "Joseph",
    "James",
    "David",
    "Daniel",
    "Samuel",
    "Brian",
    "Kevin",
    "Dennis",
    "Paul",
    "Stephen",
    "Michael",
    "George",
    "Francis",
    "Charles",
    "Patrick",
    "Collins",
    "Victor",
    "Emmanuel",
    "Moses",
    "Isaac",
    "Simon",
    "Anthony",
    "Robert",
    "Kennedy",
    "Evans",
    "Geoffrey",
]
MUSLIM_F = ["Fatuma", "Amina", "Halima", "Zainab", "Mariam", "Khadija", "Asha", "Hawa", "Saida", "Rehema"]
MUSLIM_M = ["Mohamed", "Abdi", "Hassan", "Ali", "Omar", "Ibrahim", "Yusuf", "Ahmed", "Abdullahi", "Hussein"]
ETHNIC: dict[str, dict[str, list[str]]] = {
    "kikuyu": {
        "f": [
            "Wanjiku",
            "Wanjiru",
            "Njeri",
            "Wambui",
            "Nyambura",
            "Wairimu",
            "Wangari",
            "Muthoni",
            "Njoki",
            "Wanjugu",
            "Waithera",
            "Nyokabi",
        ],
        "m": [
            "Kamau",
            "Mwangi",
            "Njoroge",
            "Kariuki",
            "Maina",
            "Kimani",
            "Githinji",
            "Macharia",
            "Gitau",
            "Waweru",
            "Ndungu",
            "Mugo",
        ],
        "family": [
            "Kamau",
            "Mwangi",
            "Njoroge",
            "Kariuki",
            "Maina",
            "Kimani",
            "Githinji",
            "Macharia",
            "Gitau",
            "Waweru",
            "Ndungu",
            "Mugo",
            "Wainaina",
            "Kinyua",
            "Muriuki",
            "Njuguna",
            "Karanja",
        ],
    },
    "luo": {
        "f": ["Achieng", "Akinyi", "Atieno", "Awino", "Adhiambo", "Anyango", "Auma", "Akoth", "Apiyo", "Aoko"],
        "m": ["Otieno", "Odhiambo", "Ochieng", "Onyango", "Omondi", "Owino", "Ouma", "Okoth", "Oduor", "Opiyo"],
        "family": [
            "Otieno",
            "Odhiambo",
            "Ochieng",
            "Onyango",
            "Omondi",
            "Owino",
            "Ouma",
            "Okoth",
            "Oduor",
            "Opiyo",
            "Otieno",
            "Oloo",
            "Okello",
            "Ogola",
            "Obiero",
            "Wasonga",
        ],
    },
    "kalenjin": {
        "f": ["Chepkoech", "Jepkosgei", "Chebet", "Jeptoo", "Cherono", "Chepngetich", "Jepchirchir"],
        "m": ["Kiprop", "Kipchumba", "Kibet", "Kiprotich", "Kipkemboi", "Kiplagat", "Kipruto"],
        "family": [
            "Cheruiyot",
            "Rotich",
            "Koech",
            "Kirui",
            "Langat",
            "Korir",
            "Mutai",
            "Kosgei",
            "Bett",
            "Tanui",
            "Ruto",
            "Sang",
        ],
    },
    "luhya": {
        "f": ["Nafula", "Nekesa", "Naliaka", "Nasimiyu", "Khadambi", "Nanjala", "Afandi"],
        "m": ["Wafula", "Wanjala", "Barasa", "Simiyu", "Wekesa", "Juma", "Makokha"],
        "family": [
            "Wafula",
            "Wanjala",
            "Barasa",
            "Simiyu",
            "Wekesa",
            "Makokha",
            "Shikuku",
            "Omondi",
            "Wanyama",
            "Khaemba",
            "Masinde",
            "Mukhwana",
        ],
    },
    "kamba": {
        "f": ["Mwende", "Mueni", "Ndunge", "Mwikali", "Kalekye", "Nduku", "Katunge"],
        "m": ["Mutua", "Musyoka", "Kioko", "Wambua", "Muthama", "Mutinda", "Kyalo"],
        "family": [
            "Mutua",
            "Musyoka",
            "Kioko",
            "Wambua",
            "Muthama",
            "Mutinda",
            "Kyalo",
            "Nzioka",
            "Mbithi",
            "Kilonzo",
            "Munyao",
        ],
    },
    "somali": {
        "f": MUSLIM_F,
        "m": MUSLIM_M,
        "family": [
            "Mohamed",
            "Abdi",
            "Hassan",
            "Ali",
            "Omar",
            "Ibrahim",
            "Yusuf",
            "Ahmed",
            "Noor",
            "Aden",
            "Farah",
            "Osman",
        ],
    },
}
ETHNIC_SHARE = {"kikuyu": 0.30, "luo": 0.22, "kalenjin": 0.18, "luhya": 0.15, "kamba": 0.10, "somali": 0.05}
TWIN_PAIRS = [
    ("Wanjiku", "Wanjiru"),
    ("Akinyi", "Atieno"),
    ("Chebet", "Cherono"),
    ("Nafula", "Nekesa"),
    ("Mwende", "Mueni"),
    ("Baraka", "Barasa"),
    ("Otieno", "Odhiambo"),
    ("Kibet", "Kiprop"),
    ("Hassan", "Hussein"),
    ("Mercy", "Faith"),
]
SYLLABLES = [
    "ka",
    "ki",
    "ko",
    "ma",
    "mu",
    "wa",
    "nji",
    "ne",
    "ro",
    "chi",
    "te",
    "no",
    "bo",
    "la",
    "si",
    "ya",
    "ge",
    "tu",
    "mbu",
    "nda",
    "ri",
    "go",
    "sa",
    "ny",
    "ke",
]


def _zipf_weights(n: int, s: float = 1.0) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(n)]


class NamePool:
    """Names drawn with a Zipf skew; a long synthetic tail makes most names rare, as in a real register."""

    def __init__(self, rng: random.Random, head: list[str], tail: int) -> None:
        names = list(dict.fromkeys(head))
        seen = set(names)
        while len(names) < len(head) + tail:
            made = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
            if made not in seen:
                seen.add(made)
                names.append(made)
        self.names = names
        self.cum: list[float] = []
        total = 0.0
        for w in _zipf_weights(len(names), 0.9):
            total += w
            self.cum.append(total)

    def draw(self, rng: random.Random) -> str:
        return rng.choices(self.names, cum_weights=self.cum)[0]


@dataclass
class Member:
    doc: dict[str, Any]
    first: str
    middle: str
    family: str
    sex: str
    dob: str
    dob_precise: bool
    phone: str | None
    twin_of: str | None = None


@dataclass
class Household:
    place: dict[str, Any]
    members: list[Member] = field(default_factory=list)
    phone: str = ""


def phone_number(rng: random.Random) -> str:
    return "07" + rng.choice("012") + "".join(rng.choice(string.digits) for _ in range(7))


def upi(rng: random.Random) -> str:
    return "MOH" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(9))


class Community:
    """Places (county → sub-county → community unit → CHW area → household) and person docs, streamed."""

    def __init__(self, seed: int = 1, *, unit_size: int = 5000, area_size: int = 500, facility_codes: int = 0) -> None:
        self.rng = random.Random(seed)
        self.unit_size, self.area_size = unit_size, area_size
        self.pools = {
            eth: {k: NamePool(self.rng, names, 120 if k == "family" else 60) for k, names in d.items()}
            for eth, d in ETHNIC.items()
        }
        self.christian = {"f": NamePool(self.rng, CHRISTIAN_F, 40), "m": NamePool(self.rng, CHRISTIAN_M, 40)}
        self.persons = 0
        self.facility_codes = facility_codes
        self._uid = 0

    def _id(self, prefix: str) -> str:
        self._uid += 1
        return f"{prefix}-{self._uid:08d}"

    def _dob(self, adult: bool) -> tuple[str, bool]:
        rng = self.rng
        year = rng.randint(1950, 2003) if adult else rng.randint(2004, 2025)
        month, day = rng.randint(1, 12), rng.randint(1, 28)
        if rng.random() < 0.2:
            return (f"{year}-01-01", False) if rng.random() < 0.5 else (f"{year}-{month:02d}-{day:02d}", False)
        return f"{year}-{month:02d}-{day:02d}", True

    def given(self, eth: str, sex: str) -> tuple[str, str]:
        rng = self.rng
        pool = self.pools[eth]
        ethnic = pool[sex].draw(rng)
        if eth == "somali":
            return ethnic, pool[sex].draw(rng)
        return self.christian[sex].draw(rng), ethnic

    def person_doc(
        self,
        household: dict[str, Any],
        first: str,
        middle: str,
        family: str,
        sex: str,
        dob: str,
        precise: bool,
        phone: str | None,
        adult: bool,
    ) -> dict[str, Any]:
        rng = self.rng
        doc: dict[str, Any] = {
            "_id": self._id("person"),
            "type": "person",
            "name": f"{first} {middle} {family}",
            "first_name": first,
            "middle_name": middle,
            "last_name": family,
            "sex": "female" if sex == "f" else "male",
            "date_of_birth": dob,
            "parent": {"_id": household["_id"], "parent": household["parent"]},
        }
        if not precise and not dob.endswith("-01-01"):
            doc["date_of_birth_method"] = "approx"
        if phone:
            doc["phone"] = "+254" + phone[1:]  # CHT stores phones validated, in E.164
        if rng.random() < 0.15:
            doc["upi"] = upi(rng)
        if adult and rng.random() < 0.4:
            doc["identification_type"] = "national_id"
            doc["identification_number"] = str(rng.randint(10_000_000, 39_999_999))
        return doc

    def household(self, area: dict[str, Any]) -> Household:
        rng = self.rng
        eth = rng.choices(list(ETHNIC_SHARE), weights=list(ETHNIC_SHARE.values()))[0]
        family = self.pools[eth]["family"].draw(rng)
        place = {
            "_id": self._id("hh"),
            "type": "contact",
            "contact_type": "e_household",
            "name": f"{family} household",
            "parent": {"_id": area["_id"], "parent": area["parent"]},
        }
        hh = Household(place, phone=phone_number(rng))
        size = rng.randint(3, 7)
        roles = ["head", "spouse"] + ["child"] * (size - 2)
        twins_at = rng.randint(2, size - 2) if size >= 4 and rng.random() < 0.06 else None
        for i, role in enumerate(roles):
            adult = role != "child"
            sex = "m" if role == "head" else "f" if role == "spouse" else rng.choice("mf")
            first, middle = self.given(eth, sex)
            dob, precise = self._dob(adult)
            twin_of = None
            if twins_at is not None and i == twins_at + 1:
                prev = hh.members[-1]
                sex, dob, precise, twin_of = prev.sex, prev.dob, prev.dob_precise, prev.doc["_id"]
                a, b = rng.choice(TWIN_PAIRS)
                prev_middle = a
                prev.middle = prev_middle
                prev.doc["middle_name"] = prev_middle
                prev.doc["name"] = f"{prev.first} {prev_middle} {prev.family}"
                first, middle = prev.first if rng.random() < 0.5 else self.christian[sex].draw(rng), b
            own_phone = adult and rng.random() < 0.6 or (not adult and dob < "2008" and rng.random() < 0.5)
            phone = phone_number(rng) if own_phone else (hh.phone if role == "head" or rng.random() < 0.5 else None)
            if role == "head" and not own_phone:
                phone = hh.phone
            doc = self.person_doc(place, first, middle, family, sex, dob, precise, phone, adult)
            member = Member(doc, first, middle, family, sex, dob, precise, phone, twin_of)
            if twin_of:
                hh.members[-1].twin_of = doc["_id"]
            hh.members.append(member)
        self.persons += len(hh.members)
        return hh

    def stream(self, persons: int) -> Iterator[tuple[list[dict[str, Any]], Household | None]]:
        """Yield (place docs, None) as places are made and ([], household) per household, until ``persons``."""
        county = {"_id": self._id("county"), "type": "contact", "contact_type": "a_county", "name": "Kisumu"}
        sub = {
            "_id": self._id("subcounty"),
            "type": "contact",
            "contact_type": "b_sub_county",
            "name": "Kisumu West",
            "parent": {"_id": county["_id"]},
        }
        yield [county, sub], None
        unit_no = 0
        while self.persons < persons:
            unit_no += 1
            code = f"{600000 + unit_no:06d}"
            unit = {
                "_id": self._id("cu"),
                "type": "contact",
                "contact_type": "c_community_health_unit",
                "name": f"Unit {unit_no} CU",
                "code": code,
                "link_facility_code": f"{13000 + (unit_no % max(self.facility_codes, 1)):05d}"
                if self.facility_codes
                else f"{13000 + unit_no // 3:05d}",
                "parent": {"_id": sub["_id"], "parent": {"_id": county["_id"]}},
            }
            yield [unit], None
            start = self.persons
            while self.persons < persons and self.persons - start < self.unit_size:
                area = {
                    "_id": self._id("area"),
                    "type": "contact",
                    "contact_type": "d_community_health_volunteer_area",
                    "name": f"Area {self._uid}",
                    "parent": {"_id": unit["_id"], "parent": unit["parent"]},
                }
                yield [area], None
                area_start = self.persons
                while self.persons < persons and self.persons - area_start < self.area_size:
                    yield [], self.household(area)


# ---- the facility's view -----------------------------------------------------------------------------

_ALPHA = "abcdefghijklmnopqrstuvwxyz"


def typo(rng: random.Random, name: str, edits: int) -> str:
    out = name.lower()
    for _ in range(edits):
        if len(out) < 3:
            break
        i = rng.randrange(1, len(out))
        op = rng.choice(("sub", "del", "ins", "swap", "y"))
        if op == "sub":
            out = out[:i] + rng.choice(_ALPHA) + out[i + 1 :]
        elif op == "del":
            out = out[:i] + out[i + 1 :]
        elif op == "ins":
            out = out[:i] + rng.choice(_ALPHA) + out[i:]
        elif op == "swap" and i < len(out) - 1:
            out = out[:i] + out[i + 1] + out[i] + out[i + 2 :]
        else:
            out = out[:i] + "y" + out[i:]  # Otieno → Otiyeno
    return out.capitalize()


@dataclass
class Incoming:
    patient: dict[str, Any]
    truth: str | None  # the CHT person id, None when absent from CHT
    tags: tuple[str, ...]
    household: tuple[str, ...] = ()  # ids of the true person's household members
    twin: str | None = None


def facility_patient(
    rng: random.Random, member: Member, hh: Household, mrn: str, mrn_system: str = "urn:emr:mrn"
) -> Incoming:
    """How the facility's EMR records a CHT person: perturbed as the benchmark specifies."""
    tags: list[str] = []
    first, middle, family = member.first, member.middle, member.family
    given = [first, middle] if rng.random() < 0.5 else ([middle] if rng.random() < 0.3 else [first])
    if rng.random() < 0.30:
        edits = 1 if rng.random() < 0.7 else 2
        if rng.random() < 0.5:
            given = [typo(rng, given[0], edits), *given[1:]]
        else:
            family = typo(rng, family, edits)
        tags.append("typo")
    if rng.random() < 0.10:
        given, family = [family], " ".join(given)
        tags.append("swap")
    dob: str | None = member.dob
    roll = rng.random()
    if roll < 0.20:
        dob = None
        tags.append("dob-missing")
    elif roll < 0.30:
        dob = f"{int(member.dob[:4]) + rng.choice((-1, 1))}{member.dob[4:]}"
        tags.append("dob-off")
    phone = member.phone
    roll = rng.random()
    others = [m.phone for m in hh.members if m is not member and m.phone and m.phone != member.phone]
    if roll < 0.25:
        phone = phone_number(rng)
        tags.append("phone-changed")
    elif roll < 0.40 and (others or hh.phone != member.phone):
        phone = rng.choice(others) if others else hh.phone
        tags.append("phone-household")
    identifiers = [{"system": mrn_system, "value": mrn}]
    if member.doc.get("upi") and rng.random() < 0.8:
        identifiers.append({"system": "urn:upi", "value": member.doc["upi"]})
        tags.append("upi")
    if member.doc.get("identification_number") and rng.random() < 0.3:
        identifiers.append({"system": "urn:nid", "value": member.doc["identification_number"]})
        tags.append("nid")
    if member.twin_of:
        tags.append("twin")
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": [{"use": "official", "family": family, "given": given}],
        "gender": "female" if member.sex == "f" else "male",
    }
    if dob:
        patient["birthDate"] = dob
    if phone:
        patient["telecom"] = [{"system": "phone", "value": phone}]
    return Incoming(
        patient,
        member.doc["_id"],
        tuple(tags) or ("clean",),
        tuple(m.doc["_id"] for m in hh.members if m is not member),
        member.twin_of,
    )


def absent_patient(
    rng: random.Random, community: Community, hh: Household | None, mrn: str, mrn_system: str = "urn:emr:mrn"
) -> Incoming:
    """A patient CHT does not know: a stranger, or (with ``hh``) a relative living in a known household."""
    eth = rng.choice(list(ETHNIC_SHARE))
    sex = rng.choice("mf")
    first, middle = community.given(eth, sex)
    if hh is not None:
        family, phone, tag = hh.members[0].family, hh.phone, "absent-relative"
    else:
        family, phone, tag = community.pools[eth]["family"].draw(rng), phone_number(rng), "absent"
    dob, _ = community._dob(rng.random() < 0.6)
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": mrn_system, "value": mrn}],
        "name": [{"use": "official", "family": family, "given": [first, middle][: rng.randint(1, 2)]}],
        "gender": "female" if sex == "f" else "male",
        "birthDate": dob,
        "telecom": [{"system": "phone", "value": phone}],
    }
    return Incoming(patient, None, (tag,), tuple(m.doc["_id"] for m in hh.members) if hh else ())
