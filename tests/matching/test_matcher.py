"""Matcher rules, vetoes and grades (domain, no database)."""

from __future__ import annotations

from ltfu.domain.matching import MatchConfig, Person, index_keys, match, query_keys
from ltfu.domain.matching.normalise import birth_date, name_tokens

CFG = MatchConfig()
POPULATION = 100_000  # persons indexed, as in a deployment (the prior is spread over them)


def person(
    pid: str | None = None,
    given: str = "",
    family: str = "",
    sex: str | None = None,
    dob: str | None = None,
    phones: tuple[str, ...] = (),
    ids: dict[str, str] | None = None,
    household: str | None = None,
    household_phones: tuple[str, ...] = (),
    unit: str | None = None,
) -> Person:
    return Person(
        id=pid,
        given=name_tokens(given),
        family=name_tokens(family),
        sex=sex,
        birth=birth_date(dob),
        phones=phones,
        identifiers=tuple((ids or {}).items()),
        household_id=household,
        household_phones=frozenset(household_phones),
        unit_code=unit,
    )


def common(_: str) -> float:
    return 0.01


def test_identifier_agreement_is_certain_even_with_other_spellings() -> None:
    incoming = person(given="Jon", family="Otieno", sex="M", ids={"upi": "MOHR13K16YL12"})
    cht = person("p1", "John", "Otiyeno", "M", "1980-04-02", ids={"upi": "MOHR13K16YL12"})
    other = person("p2", "Jon", "Otieno", "M", "1980-04-02")
    result = match(incoming, [other, cht], common)
    assert result.best.person_id == "p1"
    assert result.best.grade == "certain"
    assert result.best.reasons == ("identifier",)
    assert result.decision == "link"


def test_identifier_with_contradicting_demographics_is_probable() -> None:
    incoming = person(given="Mary", family="Achieng", sex="F", dob="1990-03-04", ids={"national_id": "27345618"})
    cht = person("p1", "Mary", "Achieng", "M", "1990-03-04", ids={"national_id": "27345618"})
    result = match(incoming, [cht], common)
    assert result.best.grade == "probable"
    assert "id-demographic-mismatch" in result.best.reasons
    far = person("p1", "Mary", "Achieng", "F", "1975-03-04", ids={"national_id": "27345618"})
    assert match(incoming, [far], common).best.grade == "probable"


def test_an_identifier_shared_by_two_cht_persons_is_a_duplicate_for_review() -> None:
    incoming = person(given="Mary", family="Achieng", sex="F", ids={"upi": "MOHR13K16YL12"})
    a = person("a", "Mary", "Achieng", "F", ids={"upi": "MOHR13K16YL12"})
    b = person("b", "Mary", "Akinyi", "F", ids={"upi": "MOHR13K16YL12"})
    result = match(incoming, [a, b], common)
    assert [c.grade for c in result.candidates] == ["possible", "possible"]
    assert "cht-duplicate" in result.reasons
    assert result.decision == "review"


def test_same_identifier_kind_with_another_value_vetoes() -> None:
    incoming = person(given="Mary", family="Achieng", sex="F", dob="1990-03-04", ids={"upi": "AAAA1234"})
    twin = person("p1", "Mary", "Achieng", "F", "1990-03-04", ids={"upi": "BBBB5678"})
    result = match(incoming, [twin], common)
    assert result.candidates == ()
    assert result.vetoed == (("p1", "identifier-conflict:upi"),)


def test_one_identifier_agreeing_and_another_conflicting_is_probable() -> None:
    incoming = person(given="Mary", family="Achieng", ids={"upi": "AAAA1234", "national_id": "27345618"})
    cht = person("p1", "Mary", "Achieng", ids={"upi": "AAAA1234", "national_id": "29999999"})
    result = match(incoming, [cht], common)
    assert result.best.grade == "probable"
    assert result.best.reasons == ("identifier-conflict",)


def test_a_facility_mrn_agrees_but_a_different_mrn_never_vetoes() -> None:
    incoming = person(given="Mary", family="Achieng", ids={"mrn:urn:emr": "A1"})
    linked = person("p1", "Mary", "Achieng", ids={"mrn:urn:emr": "A1"})
    assert match(incoming, [linked], common).best.grade == "certain"
    other_mrn = person("p2", "Mary", "Achieng", "F", "1990-03-04", ids={"mrn:urn:emr": "B7"})
    assert match(incoming, [other_mrn], common).vetoed == ()


def test_sex_contradiction_vetoes() -> None:
    incoming = person(given="Brian", family="Kiprop", sex="M", dob="2001-06-07", phones=("+254712345678",))
    sister = person("p1", "Brian", "Kiprop", "F", "2001-06-07", ("+254712345678",))
    result = match(incoming, [sister], common)
    assert result.candidates == ()
    assert result.vetoed == (("p1", "sex"),)


def test_birth_dates_far_apart_veto() -> None:
    incoming = person(given="Brian", family="Kiprop", sex="M", dob="2001-06-07")
    father = person("p1", "Brian", "Kiprop", "M", "1970-06-07")
    assert match(incoming, [father], common).vetoed == (("p1", "birth-date"),)
    year_only_far = person("p2", "Brian", "Kiprop", "M", "1970")
    assert match(incoming, [year_only_far], common).vetoed == (("p2", "birth-date"),)


def test_exact_name_dob_and_own_phone_is_certain() -> None:
    incoming = person(given="Grace", family="Wambui", sex="F", dob="1988-11-23", phones=("+254722000111",))
    cht = person("p1", "Grace", "Wambui", "F", "1988-11-23", ("+254722000111",))
    result = match(incoming, [cht], common)
    assert result.best.grade == "certain"
    assert result.best.probability >= CFG.certain_p


def test_given_family_swap_scores_like_straight() -> None:
    incoming = person(given="Wambui", family="Grace", sex="F", dob="1988-11-23", phones=("+254722000111",))
    cht = person("p1", "Grace", "Wambui", "F", "1988-11-23", ("+254722000111",))
    result = match(incoming, [cht], common)
    assert result.best.grade == "certain"
    assert [f.level for f in result.best.fields[:2]] == ["exact", "exact"]


def test_a_typo_in_the_given_name_is_not_certain_on_a_household_phone() -> None:
    """Wanjiku and Wanjiru are two different common names (Jaro–Winkler 0.94): twins share the birth day and
    the household phone, so a close given name links only with an own phone as well."""
    phone = ("+254733000222",)
    incoming = person(given="Wanjiru", family="Kamau", sex="F", dob="1995-02-14", phones=phone)
    cht = person("p1", "Wanjiku", "Kamau", "F", "1995-02-14", phone, household="h", household_phones=phone)
    result = match(incoming, [cht], common)
    assert result.best.grade == "probable"
    assert result.best.fields[0].level == "close"
    own = person("p1", "Wanjiku", "Kamau", "F", "1995-02-14", phone)
    assert match(incoming, [own], common).best.grade == "certain"
    no_day = person("p1", "Wanjiku", "Kamau", "F", "1995", phone)
    assert match(incoming, [no_day], common).best.grade != "certain"


def test_a_twin_is_not_certain_beside_the_other_twin() -> None:
    """Twins share family name, birth date, household and phone; only the given name tells them apart."""
    phone = ("+254711000333",)
    a = person("a", "Wanjiku", "Kamau", "F", "2010-07-01", phone, household="h", household_phones=phone)
    b = person("b", "Wanjiru", "Kamau", "F", "2010-07-01", phone, household="h", household_phones=phone)
    incoming = person(given="Wanjiku", family="Kamau", sex="F", dob="2010-07-01", phones=phone)
    result = match(incoming, [a, b], common)
    assert result.best.person_id == "a"
    assert result.best.grade != "certain"  # the household phone is the family's, so no strong evidence


def test_two_close_candidates_downgrade_the_best_to_probable_conflict() -> None:
    incoming = person(given="Grace", family="Wambui", sex="F", dob="1988-11-23")
    a = person("a", "Grace", "Wambui", "F", "1988-11-23")
    b = person("b", "Grace", "Wambui", "F", "1988-11-23")
    result = match(incoming, [a, b], common)
    assert [c.grade for c in result.candidates] == ["probable", "probable"]
    assert "conflict" in result.reasons


def test_a_household_phone_weighs_less_than_an_own_phone() -> None:
    phone = ("+254711000333",)
    incoming = person(given="Peter", family="Mwangi", phones=phone)
    own = match(incoming, [person("a", "Peter", "Mwangi", phones=phone)], common).best
    shared = match(incoming, [person("a", "Peter", "Mwangi", phones=phone, household_phones=phone)], common).best
    assert own.weight - shared.weight == CFG.phone_agree_weight - CFG.phone_household_weight


def test_rare_names_weigh_more_than_common_names() -> None:
    freq = {"OTIENO": 0.05, "ODHIAMBO": 0.05, "ZAWADI": 0.0001}.get
    incoming = person(given="Zawadi", family="Otieno")
    rare = match(incoming, [person("a", "Zawadi", "Otieno")], freq).best
    common_given = match(person(given="Odhiambo", family="Otieno"), [person("a", "Odhiambo", "Otieno")], freq).best
    assert rare.fields[0].weight > common_given.fields[0].weight + 5


def test_grades_follow_the_posterior() -> None:
    incoming = person(given="Grace", family="Wambui", sex="F", dob="1988")
    cht = [person("a", "Grace", "Wambui", "F", "1988")]
    names_only = match(incoming, cht, common, population=POPULATION).best
    assert names_only.grade in ("probable", "possible")
    other = [person("a", "Grace", "Otieno", "F", "1990")]
    assert match(incoming, other, common, population=POPULATION).candidates == ()  # below possible


def test_the_prior_is_spread_over_the_index_not_the_block() -> None:
    """The same evidence weighs less in a larger community (more namesakes), whatever the block size."""
    incoming = person(given="Grace", family="Wambui", sex="F", dob="1988")
    cht = person("a", "Grace", "Wambui", "F", "1988")
    crowd = [person(f"x{i}", "Grace", "Otieno", "F", "1950") for i in range(50)]
    alone = match(incoming, [cht], common, population=POPULATION).best.probability
    assert match(incoming, [cht, *crowd], common, population=POPULATION).best.probability == alone
    assert match(incoming, [cht], common, population=10 * POPULATION).best.probability < alone
    # without a population the candidates are the whole population
    by_default = match(incoming, [cht], common).best.probability
    assert by_default == match(incoming, [cht], common, population=1).best.probability


def test_probable_and_possible_follow_their_thresholds() -> None:
    # names only, in a small community (1,000 persons): neither sure nor negligible
    incoming, cht = person(given="Grace", family="Wambui"), person("a", "Grace", "Wambi")
    p = match(incoming, [cht], common, population=1000).best.probability
    assert 0.01 < p < 0.99
    between = MatchConfig(probable_p=p + 0.001, possible_p=p - 0.001)
    assert match(incoming, [cht], common, between, population=1000).best.grade == "possible"
    probable = MatchConfig(probable_p=p - 0.001)
    assert match(incoming, [cht], common, probable, population=1000).best.grade == "probable"
    above = MatchConfig(probable_p=p + 0.002, possible_p=p + 0.001)
    assert match(incoming, [cht], common, above, population=1000).candidates == ()


def test_birth_date_levels() -> None:
    def level(a: str, b: str) -> str:
        found = match(
            person(given="Grace", family="Wambui", dob=a),
            [person("x", "Grace", "Wambui", dob=b)],
            common,
            MatchConfig(possible_p=0.0),
        )
        return [f.level for f in found.best.fields if f.field == "birthDate"][0] if found.best else "vetoed"

    assert level("1990-05-17", "1990-05-17") == "day"
    assert level("1990-05-17", "1991-05-17") == "shifted"
    assert level("1990-05-17", "1990-08-02") == "other-day"
    assert level("1990-05-17", "1990") == "year"
    assert level("1990-05-17", "1991-01-01") == "near"
    assert level("1990-05-17", "1993-05-01") == "disagree"
    assert level("1990-05-17", "2001-05-17") == "vetoed"


def test_excluded_candidates_are_never_proposed() -> None:
    incoming = person(given="Grace", family="Wambui", sex="F", dob="1988-11-23", phones=("+254722000111",))
    cht = person("p1", "Grace", "Wambui", "F", "1988-11-23", ("+254722000111",))
    assert match(incoming, [cht], common, excluded=["p1"]).candidates == ()


def test_overflow_is_reported_not_silent() -> None:
    assert match(person(given="A", family="B"), [], common, overflow=True).reasons == ("block-overflow",)


def test_no_candidate_from_an_overflowing_block_goes_to_review_not_to_creation() -> None:
    """The cap left persons unread: one of them may be this patient, so no person is created for it."""
    result = match(person(given="Grace", family="Wambui"), [], common, overflow=True)
    assert result.decision == "review"
    assert result.best is None


def test_no_candidates_means_no_decision() -> None:
    result = match(person(given="Grace", family="Wambui"), [], common)
    assert result.decision == "none"
    assert result.best is None


def _keys(incoming: Person) -> set[str]:
    return {k.key for k in query_keys(incoming)}


def test_query_keys_reach_the_index_keys_of_a_perturbed_record() -> None:
    cht = person("p1", "Grace", "Wambui", "F", "1988-11-23", ("+254722000111",), ids={"upi": "X1Y2Z3"})
    stored = index_keys(cht)
    assert _keys(person(given="Wambui", family="Grace")) & stored  # swapped, no birth date
    assert _keys(person(given="Gracee", family="Wambui", dob="1989")) & stored  # typo, year off by one
    assert _keys(person(given="X", family="Y", ids={"upi": "X1Y2Z3"})) & stored
    assert _keys(person(given="X", family="Y", phones=("+254722000111",))) & stored


def test_overrides_are_checked() -> None:
    assert MatchConfig().with_overrides({"certain_p": "0.99", "block_cap": 50}).block_cap == 50
    try:
        MatchConfig().with_overrides({"certian_p": 0.9})
    except ValueError as exc:
        assert "certian_p" in str(exc)
    else:
        raise AssertionError("a misspelt setting must be refused")


def test_a_phone_two_household_members_share_is_a_household_phone() -> None:
    phone = ("+254711000333",)
    mother = person("m", "Akinyi", "Odhiambo", "F", "1980-02-02", phone, household="h")
    son = person("s", "Brian", "Odhiambo", "M", "2005-03-03", phone, household="h")
    incoming = person(given="Akinyi", family="Odhiambo", phones=phone)
    best = match(incoming, [mother, son], common).best
    assert best.person_id == "m"
    assert [f.level for f in best.fields if f.field == "phone"] == ["household"]
    alone = match(incoming, [mother], common).best
    assert [f.level for f in alone.fields if f.field == "phone"] == ["exact"]


def test_a_given_name_both_sides_have_and_disagree_on_is_never_certain() -> None:
    """Lucy Mwende is not Grace Mwende, even born the same day: the best token agreeing is not enough when
    another given name both records carry disagrees (siblings share ethnic names)."""
    incoming = person(given="Lucy Mwende", family="Musyoka", sex="F", dob="2021-04-07", phones=("+254710000001",))
    sister = person("s", "Grace Mwende", "Musyoka", "F", "2021-04-07", ("+254710000001",))
    result = match(incoming, [sister], common)
    assert result.best is None or result.best.grade != "certain"
    given = match(incoming, [sister], common, MatchConfig(possible_p=0.0)).best.fields[0]
    assert given.level == "exact-other-differs"
    assert given.verdict == "partial"
    assert given.weight == CFG.name_exact_weight(0.01) + CFG.name_extra_mismatch_weight
    same = person("p", "Lucy Mwende", "Musyoka", "F", "2021-04-07", ("+254710000001",))
    assert match(incoming, [same], common).best.grade == "certain"


def test_a_second_given_name_missing_on_one_side_is_no_conflict() -> None:
    """An EMR often records only one of the given names: Mwende alone agrees with Lucy Mwende."""
    incoming = person(given="Mwende", family="Musyoka", sex="F", dob="2021-04-07", phones=("+254710000001",))
    cht = person("p", "Lucy Mwende", "Musyoka", "F", "2021-04-07", ("+254710000001",))
    result = match(incoming, [cht], common)
    assert result.best.fields[0].level == "exact"
    assert result.best.grade == "certain"


def test_within_a_household_the_phone_does_not_make_the_lead() -> None:
    """The patient gave a relative's phone: the member holding it must not win on the phone alone over a
    member whose names agree as well (the phone tells the household, not the person)."""
    phone = ("+254713000001",)
    holder = person("a", "Rinda Mutua", "Wake", "M", "1998", phone, household="h")
    sibling = person("b", "Emmanuel Mutua", "Wake", "M", "2011-10-08", household="h")
    incoming = person(given="Mutua", family="Wake", sex="M", phones=phone)
    result = match(incoming, [holder, sibling], common)
    assert result.best.person_id == "a"
    assert result.best.grade != "certain"
    assert "conflict" in result.reasons
    # in another household the own phone is real evidence and the lead stands
    stranger = person("b", "Emmanuel Mutua", "Wake", "M", "2011-10-08", household="h2")
    assert match(incoming, [holder, stranger], common).best.grade == "certain"
