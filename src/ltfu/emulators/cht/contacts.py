"""People, places and users APIs of cht-core 4.x/5.x, shaped as cht-core 5.2 answered them
(``shared/reference/cht-recordings/``).

``/api/v1/people``, ``/api/v1/places`` (legacy: ``type: <contact type>``), cht-datasource's
``/api/v1/person`` and ``/api/v1/place`` (5.x: ``type: "contact"`` + ``contact_type``),
``/api/v1/users`` and ``/api/v2/users``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .app_settings import Settings
from .auth import ONLINE_ROLE, hash_password
from .http import ApiError
from .lineage import hydrate_contact, minify
from .records import moment_value
from .store import MEDIC, USERS, DocStore


def _bad(message: Any, code: int = 400) -> ApiError:
    return ApiError(code, message)


def _reported_date(value: Any, zone: Any) -> int | None:
    if value is None:
        return int(time.time() * 1000)
    return moment_value(value, zone)


class Contacts:
    def __init__(self, store: DocStore, settings: Any, zone: Any) -> None:
        self.store = store
        self._settings = settings
        self.zone = zone

    @property
    def settings(self) -> Settings:
        return self._settings()

    # ------------------------------------------------------------------------------------ people

    def get_person(self, doc_id: str) -> dict:
        doc = self.store.get(MEDIC, doc_id)
        if doc is None or not self.settings.is_person(doc):
            raise _bad("Failed to find person.", 404)
        return hydrate_contact(self.store, doc)

    def validate_person(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return "Person must be an object."
        if not self.settings.is_person(obj):
            return "Wrong type, this is not a person."
        if "name" not in obj:
            return 'Person is missing a "name" property.'
        if not isinstance(obj["name"], str):
            return 'Property "name" must be a string.'
        if obj.get("reported_date") is not None and moment_value(obj["reported_date"], self.zone) is None:
            return f"Reported date is invalid: {obj['reported_date']}"
        return None

    def create_person(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise _bad("Person must be an object.")
        data = dict(data)
        if not data.get("type") and self.settings.default_person_type():
            data["type"] = self.settings.default_person_type()
        error = self.validate_person(data)
        if error:
            raise _bad(error)
        data["reported_date"] = _reported_date(data.get("reported_date"), self.zone)
        if data.get("place"):
            place = self.get_or_create_place(data.pop("place"))
            data["parent"] = minify(place)
        elif "place" in data:
            data.pop("place")
        data.pop("_rev", None)
        entry = self.store.put(MEDIC, data)
        return {"ok": True, "id": entry.id, "rev": entry.rev}  # CouchDB's post result, as people.js returns it

    def get_or_create_person(self, data: Any) -> dict:
        if isinstance(data, str):
            return self.get_person(data)
        if isinstance(data, dict) and "_rev" not in data:
            return self.get_person(self.create_person(data)["id"])
        raise _bad("Person must be a new object or string identifier (UUID).")

    # ------------------------------------------------------------------------- cht-datasource (5.x)

    def create_datasource_contact(self, data: Any, *, person: bool) -> dict:
        """``POST /api/v1/person`` / ``/api/v1/place``: stored as ``type: "contact"`` with
        ``contact_type`` (even for the built-in types); the answer is the stored doc."""
        if not isinstance(data, dict):
            raise _bad("The request body must be an object.")
        for key in ("type", "name"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise _bad(f"The [{key}] field must have a [string] value.")
        ctype = self.settings.contact_types.get(data["type"])
        is_person = bool(ctype and (ctype.get("person") or ctype["id"] == "person"))
        if ctype is None or is_person != person:
            raise _bad(f"Invalid contact type [{data['type']}].")
        parent_ref = data.get("parent")
        if (person or ctype.get("parents")) and (not isinstance(parent_ref, str) or not parent_ref):
            raise _bad("The [parent] field must have a [string] value.")
        parent = None
        if parent_ref:
            parent = self.store.get(MEDIC, parent_ref)
            if parent is None or not self.settings.is_place(parent):
                raise _bad(f"Parent contact [{parent_ref}] not found.")
            if ctype.get("parents") and self.settings.type_id(parent) not in ctype["parents"]:
                raise _bad(f"Invalid parent type for [{data['type']}].")
        if data.get("reported_date") is not None and moment_value(data["reported_date"], self.zone) is None:
            raise _bad("Invalid reported_date.")
        doc = {k: v for k, v in data.items() if k not in ("_id", "_rev")}
        doc["type"] = "contact"
        if parent is not None:
            doc["parent"] = minify(parent)
        doc["contact_type"] = data["type"]
        doc["reported_date"] = _reported_date(data.get("reported_date"), self.zone)
        entry = self.store.put(MEDIC, doc)
        return dict(entry.body)

    def list_contacts(self, type_id: Any, limit: Any, cursor: Any, *, person: bool) -> dict:
        """``GET /api/v1/person?type=…`` / ``/api/v1/place?type=…``: one page ``{data, cursor}``."""
        ctype = self.settings.contact_types.get(type_id) if isinstance(type_id, str) else None
        if ctype is None or bool(ctype.get("person") or ctype["id"] == "person") != person:
            raise _bad(f"Invalid contact type [{type_id}].")
        try:
            size = int(limit) if limit is not None else 100
            skip = int(cursor) if cursor not in (None, "") else 0
        except ValueError:
            raise _bad(f"The limit must be a positive number: [{limit}].") from None
        if size < 1 or skip < 0:
            raise _bad(f"The limit must be a positive number: [{limit}].")
        docs = [d for i in self.store.sorted_ids(MEDIC) if (d := self.store.peek(MEDIC, i))
                and not i.startswith("_design/") and self.settings.type_id(d) == type_id]
        page = docs[skip:skip + size]
        more = skip + size < len(docs)
        return {"data": page, "cursor": str(skip + size) if more else None}

    # ------------------------------------------------------------------------------------ places

    def get_place(self, doc_id: str) -> dict:
        doc = self.store.get(MEDIC, doc_id)
        if doc is None or not self.settings.is_place(doc):
            raise _bad("Failed to find place.", 404)
        return hydrate_contact(self.store, doc)

    def validate_place(self, place: Any) -> None:
        if not isinstance(place, dict):
            raise _bad("Place must be an object.")
        pid = place.get("_id") or ""
        if not self.settings.is_place(place):
            raise _bad(f"Wrong type, object {pid} is not a place.")
        if "name" not in place:
            raise _bad(f'Place {pid} is missing a "name" property.')
        if place.get("reported_date") is not None and moment_value(place["reported_date"], self.zone) is None:
            raise _bad(f"Reported date on place {pid} is invalid: {place['reported_date']}")
        if not isinstance(place["name"], str):
            raise _bad(f'Property "name" on place {pid} must be a string.')
        ctype = self.settings.contact_type(place) or {}
        parents = ctype.get("parents") or []
        if parents:
            if not place.get("parent"):
                raise _bad(f'Place {pid} is missing a "parent" property.')
            parent_type = self.settings.type_id(place["parent"])
            if parent_type not in parents:
                raise _bad(
                    f'{ctype["id"]} "{pid}" should have one of the following parent types: '
                    f'"{",".join(parents)}".'
                )
        contact = place.get("contact")
        if contact and not isinstance(contact, str | dict):
            raise _bad(f'Property "contact" on place {pid} must be an object or string.')
        if isinstance(place.get("parent"), dict) and place["parent"]:
            self.validate_place(place["parent"])

    def _create_place(self, place: dict) -> dict:
        self.validate_place(place)
        contact = place.pop("contact", None)
        contact_exists = False
        if isinstance(contact, str):
            contact = self.get_or_create_person(contact)
            contact_exists = True
        elif isinstance(contact, dict):
            contact = dict(contact)
            contact.setdefault("type", self.settings.default_person_type())
            error = self.validate_person(contact)
            if error:
                raise _bad(error)
        place["reported_date"] = _reported_date(place.get("reported_date"), self.zone)
        if place.get("parent"):
            place["parent"] = minify(place["parent"])
        if not contact:
            entry = self.store.put(MEDIC, place)
            return {"ok": True, "id": entry.id, "rev": entry.rev}
        if contact_exists:
            place["contact"] = minify(contact)
            entry = self.store.put(MEDIC, place)
            return {"ok": True, "id": entry.id, "rev": entry.rev, "contact": {"id": contact["_id"]}}
        entry = self.store.put(MEDIC, place)
        contact["place"] = entry.id
        person = self.get_or_create_person(contact)
        stored = self.store.get(MEDIC, entry.id) or {}
        stored["contact"] = minify(person)
        updated = self.store.put(MEDIC, stored)
        return {"id": updated.id, "rev": updated.rev, "contact": {"id": person["_id"]}}

    def create_place(self, place: Any) -> dict:
        if not isinstance(place, dict):
            raise _bad("Place must be an object.")
        place = dict(place)
        parent = place.get("parent")
        if isinstance(parent, str):
            place["parent"] = self.get_place(parent)
        elif isinstance(parent, dict) and not parent.get("_id"):
            place["parent"] = self.create_place(parent)["id"]
            return self.create_place(place)
        return self._create_place(place)

    def get_or_create_place(self, place: Any) -> dict:
        if isinstance(place, str):
            return self.get_place(place)
        if isinstance(place, dict) and not place.get("_rev"):
            return self.get_place(self.create_place(place)["id"])
        raise _bad("Place must be a new object or string identifier (UUID).")

    # ------------------------------------------------------------------------------------- users

    USERNAME = re.compile(r"^[a-z0-9_-]+$")

    def _user_error(self, message: str, key: str, params: dict | None = None, code: int = 400) -> ApiError:
        body: dict[str, Any] = {"message": message, "translationKey": key}
        if params:
            body["translationParams"] = params
        return ApiError(code, body)

    @staticmethod
    def password_strength(password: str) -> int:
        """A rough stand-in for the strength score CHT requires (>= 50)."""
        classes = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]"))
        return len(password) * 4 + (classes - 1) * 10 + (10 if len(set(password)) > len(password) // 2 else 0)

    def create_user(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise self._user_error("Body must be an object.", "field is required")
        data = dict(data)
        roles = data.get("roles")
        if roles is None and data.get("type"):
            roles = [data["type"]]
        missing = [f for f in ("username", "password") if not data.get(f)]
        if not roles:
            missing.append("type or roles")
        if missing:
            raise self._user_error(
                f"Missing required fields: {', '.join(missing)}", "fields.required", {"fields": ", ".join(missing)}
            )
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise self._user_error("Roles must be an array of strings.", "roles.invalid")
        username = str(data["username"])
        if not self.USERNAME.match(username):
            raise self._user_error(
                "Invalid user name. Valid characters are lower case letters, numbers, underscore (_), "
                "and hyphen (-).",
                "username.invalid",
            )
        password = str(data["password"])
        if len(password) < 8:
            raise self._user_error(
                "The password must be at least 8 characters long.", "password.length.minimum", {"minimum": 8}
            )
        if self.password_strength(password) < 50:
            raise self._user_error(
                "The password is too easy to guess. Include a range of types of "
                "characters to increase the score.",
                "password.weak",
            )
        user_id = f"org.couchdb.user:{username}"
        if self.store.peek(USERS, user_id) is not None or self.store.peek(MEDIC, user_id) is not None:
            raise self._user_error(
                f'Username "{username}" already taken.', "username.taken", {"username": username}
            )
        offline = any(self.settings.is_offline_role(r) for r in roles)
        place_ref = data.get("place")
        contact_ref = data.get("contact")
        if offline and (not place_ref or not contact_ref):
            need = [f for f, v in (("place", place_ref), ("contact", contact_ref)) if not v]
            raise self._user_error(
                f"Missing required fields: {', '.join(need)}", "fields.required", {"fields": ", ".join(need)}
            )
        place = self.get_or_create_place(place_ref) if place_ref else None
        contact = None
        if contact_ref:
            if isinstance(contact_ref, dict) and place is not None and not contact_ref.get("place"):
                contact_ref = dict(contact_ref, place=place["_id"])
            contact = self.get_or_create_person(contact_ref)
            if place is not None:
                lineage_ids = []
                p = contact.get("parent")
                while isinstance(p, dict):
                    lineage_ids.append(p.get("_id"))
                    p = p.get("parent")
                if place["_id"] not in lineage_ids:
                    raise self._user_error("Contact is not within place.", "configuration.user.place.contact")
        stored_roles = list(roles) + ([] if offline else [ONLINE_ROLE])
        facility = [place["_id"]] if place else None  # 5.x: facility_id is a list
        user_doc = {
            "_id": user_id,
            "name": username,
            "type": "user",
            "password_change_required": True,  # 5.x: a user created by someone else resets it at first login
            "roles": stored_roles,
            "facility_id": facility,
            "contact_id": contact["_id"] if contact else None,
            **hash_password(password),
        }
        user_entry = self.store.put(USERS, {k: v for k, v in user_doc.items() if v is not None})
        settings_doc = {
            "_id": user_id,
            "name": username,
            "type": "user-settings",
            "roles": stored_roles,
            "facility_id": facility,
            "contact_id": contact["_id"] if contact else None,
        }
        for k in ("fullname", "email", "phone", "language", "known"):
            if data.get(k) is not None:
                settings_doc[k] = data[k]
        settings_entry = self.store.put(MEDIC, {k: v for k, v in settings_doc.items() if v is not None})
        result: dict[str, Any] = {}
        if contact is not None:
            current = self.store.entry(MEDIC, contact["_id"])
            result["contact"] = {"id": contact["_id"], "rev": current.rev if current else contact.get("_rev")}
        result["user"] = {"id": user_entry.id, "rev": user_entry.rev}
        result["user-settings"] = {"id": settings_entry.id, "rev": settings_entry.rev}
        return result

    def _user_parts(self, doc: dict) -> tuple[list[dict] | None, dict | None]:
        facilities = doc.get("facility_id")
        facilities = facilities if isinstance(facilities, list) else [facilities] if facilities else []
        places = [p for f in facilities if isinstance(f, str) and (p := self.store.peek(MEDIC, f))]
        contact = self.store.peek(MEDIC, doc["contact_id"]) if doc.get("contact_id") else None
        return (places or None), contact

    def user_v2(self, doc: dict) -> dict:
        """One user as ``/api/v2/users`` answers it: ``{id, rev, username, place: [docs], roles, contact}``."""
        settings = self.store.peek(MEDIC, doc["_id"]) or {}
        places, contact = self._user_parts(doc)
        out: dict[str, Any] = {"id": doc["_id"], "rev": doc["_rev"], "username": doc["name"], "place": places,
                               "roles": [r for r in doc.get("roles") or [] if r != ONLINE_ROLE]}
        for k in ("fullname", "email", "phone"):
            if settings.get(k) is not None:
                out[k] = settings[k]
        if contact is not None:
            out["contact"] = contact
        return out

    def users(self) -> list[dict]:
        return [d for i in self.store.sorted_ids(USERS) if (d := self.store.peek(USERS, i)) and d.get("type") == "user"]

    def list_users(self) -> list[dict]:
        """``GET /api/v1/users``: ``{id, rev, username, place: [docs]|null, contact?, type: <first role>}``."""
        out = []
        for doc in self.users():
            settings = self.store.peek(MEDIC, doc["_id"]) or {}
            places, contact = self._user_parts(doc)
            item: dict[str, Any] = {"id": doc["_id"], "rev": doc["_rev"], "username": doc["name"], "place": places}
            for k in ("fullname", "email", "phone"):
                if settings.get(k) is not None:
                    item[k] = settings[k]
            if contact is not None:
                item["contact"] = contact
            roles = [r for r in doc.get("roles") or [] if r != ONLINE_ROLE]
            item["type"] = roles[0] if roles else None
            out.append(item)
        return out

    def list_users_v2(self, facility_id: str | None, contact_id: str | None) -> list[dict]:
        """``GET /api/v2/users[?facility_id=&contact_id=]``."""
        out = []
        for doc in self.users():
            facilities = doc.get("facility_id")
            facilities = facilities if isinstance(facilities, list) else [facilities]
            if facility_id and facility_id not in facilities:
                continue
            if contact_id and doc.get("contact_id") != contact_id:
                continue
            out.append(self.user_v2(doc))
        return out
