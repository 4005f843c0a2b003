"""ltfu.cht.outbound_mapping against node's ``vm`` on the same docs and mappings (+ unit checks)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ltfu.cht.outbound_mapping import (
    UNDEFINED,
    OutboundMappingError,
    eval_js,
    is_relevant,
    js_json,
    map_outbound,
    payload_hash,
)

NODE_SCRIPT = Path(__file__).with_name("node_outbound.js")
SETTINGS = json.loads((Path(__file__).parent / "fixtures" / "app_settings.json").read_text())

PERSON = {
    "_id": "p-1",
    "_rev": "2-abc",
    "type": "person",
    "name": "Jane Doe",
    "short_name": "",
    "sex": "female",
    "date_of_birth": "1990-01-01",
    "phone": "+254700000002",
    "role": "patient",
    "patient_id": "28469",
    "reported_date": 1732440000000,
    "parent": {
        "_id": "hh",
        "name": "Household",
        "type": "clinic",
        "parent": {"_id": "area", "type": "health_center", "parent": {"_id": "dh"}},
    },
    "identifiers": [{"use": "official", "value": "X1"}],
    "5": "five",
    "ünï": "cödé\u2028x",
    "score": 1.5e-7,
    "big": 12345678901234567890,
    "neg": -0.0,
    "flag": True,
    "none": None,
}
REPORT = {
    "_id": "r-1",
    "type": "data_record",
    "form": "ltfu_follow_up",
    "reported_date": 1732440000123,
    "contact": {"_id": "chw-1", "name": "Wanjiru", "parent": {"_id": "area"}},
    "fields": {
        "inputs": {"attempt_no": "2", "case_ref": "SR-9", "contact": {"_id": "p-1"}},
        "patient_uuid": "p-1",
        "patient_id": "28469",
        "case_ref": "SR-9",
        "follow_up": {
            "method": "home_visit",
            "outcome": "moved",
            "new_area": "Eldoret",
            "next_appointment_date": "",
        },
        "notes": "",
    },
}

CASES = [
    {
        "doc": PERSON,
        "key": "ltfu_patient",
        **{k: SETTINGS["outbound"]["ltfu_patient"][k] for k in ("mapping", "relevant_to")},
    },
    {
        "doc": REPORT,
        "key": "ltfu_follow_up",
        **{k: SETTINGS["outbound"]["ltfu_follow_up"][k] for k in ("mapping", "relevant_to")},
    },
    {
        "doc": REPORT,
        "key": "x",
        "relevant_to": "doc.type === 'data_record' && doc.form === 'INTEROP_FOLLOW_UP'",
        "mapping": {"id": "doc._id"},
    },
    # the PoC's person mapping: identifier.use + identifier.value make an object
    {
        "doc": PERSON,
        "key": "poc",
        "relevant_to": "doc.type === 'person' && doc.role == 'patient'",
        "mapping": {
            "resourceType": {"expr": "'Patient'"},
            "id": "doc._id",
            "identifier.use": {"expr": "'official'"},
            "identifier.value": "doc.patient_id",
            "name.given": {"expr": "[doc.short_name || null]"},
            "gender": "doc.sex",
            "birthDate": "doc.date_of_birth",
        },
    },
    {
        "doc": PERSON,
        "key": "edge",
        "relevant_to": "doc.name.length > 3 ? {} : 0",
        "mapping": {
            "a.0.b": "doc.name",
            "arr.2": "doc.sex",
            "5": "doc.5",
            "name_len": "doc.name.length",
            "first_char": "doc.name.0",
            "opt": {"path": "doc.nothing.here", "optional": True},
            "nul": "doc.none",
            "through_null": {"path": "doc.none.x", "optional": True},
            "ident": "doc.identifiers",
            "ident.use": {"expr": "'x'"},
            "fn": {"expr": "(function () {})"},
            "x.y.z": {"expr": "var a = 1; var b = a + 1; b * 2"},
            "unicode": "doc.ünï",
            "tmpl": {"expr": "`${doc.name}-${doc.patient_id ?? 'none'}`"},
            "opt_chain": {"expr": "doc.parent?.parent?._id"},
            "nums": {"expr": "[NaN, Infinity, -0, 1e21, 0.1 + 0.2, doc.score, doc.big]"},
            "date": {"expr": "new Date(doc.reported_date).toISOString()"},
            "bool_expr": {"expr": True},
            "console": {"expr": "typeof console + typeof require + typeof process"},
            "sorted": {"expr": "({b: 1, a: {d: 1, c: [ {z: 1, y: 2} ]}, 10: 'ten', 2: 'two'})"},
            "regex": {"expr": "/J(an)e/.exec(doc.name)[1]"},
            "norm": {"expr": "'e\\u0301'.normalize('NFC')"},
        },
    },
    # errors
    {"doc": PERSON, "key": "err1", "mapping": {"x": "doc.nothing"}},
    {"doc": PERSON, "key": "err2", "mapping": {"x": {"expr": "doc.nothing"}}},
    {"doc": PERSON, "key": "err3", "mapping": {"x": {"optional": True}}},
    {"doc": PERSON, "key": "err4", "mapping": {"x": {"expr": "doc.nothing.deeper"}}},
    {"doc": PERSON, "key": "rel", "relevant_to": "doc.type === 'data_record'"},
]


def python_side(case: dict) -> dict:
    res: dict = {}
    try:
        if "relevant_to" in case:
            res["relevant"] = is_relevant(case["doc"], case["relevant_to"])
        if "mapping" in case:
            payload = map_outbound(case["doc"], case["mapping"], case["key"])
            res["body"] = js_json(payload)
            res["hash"] = payload_hash(payload)
    except OutboundMappingError as exc:
        res["error"] = str(exc)
    return res


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_matches_node_vm():
    node = subprocess.run(
        ["node", str(NODE_SCRIPT)],
        input=json.dumps(CASES, ensure_ascii=False),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    expected = json.loads(node.stdout)
    for case, want in zip(CASES, expected, strict=True):
        got = python_side(case)
        if "error" in want and "JS error" in want["error"]:
            # engines word their TypeErrors differently; the message up to the JS error text must match
            assert got["error"].split("': ")[0] == want["error"].split("': ")[0], case["key"]
            assert set(got) == set(want)
            continue
        assert got == want, case["key"]


def test_eval_semantics():
    assert eval_js("doc.a + 1", {"a": 1}) == 2
    assert eval_js("doc.missing", {}) is UNDEFINED
    assert eval_js("typeof globalThis.ltfu", {}) == "undefined"
    # a fresh context each time: globals from one evaluation do not leak into the next
    eval_js("var leaked = 1; leaked", {})
    assert eval_js("typeof leaked", {}) == "undefined"
    assert is_relevant({"n": 0}, "doc.n") is False and is_relevant({"n": "0"}, "doc.n") is True


def test_hash_sorts_keys_by_utf16_code_unit():
    # U+FF5E sorts before U+1F600 in UTF-16 (0xFF5E < 0xD83D) but after it by code point
    payload = {"\U0001f600": 1, "\uff5e": 2, "a": {"z": 1, "b": [{"y": 1, "x": 2}]}}
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    script = (
        "const o=JSON.parse(require('fs').readFileSync(0,'utf8'));const s=t=>Object.prototype.toString"
        ".call(t)==='[object Object]'?`{${Object.keys(t).sort().map(k=>`\"${k}\":${s(t[k])}`).join(',')}}`"
        ":JSON.stringify(t);process.stdout.write(require('crypto').createHash('sha256').update(s(o))"
        ".digest('hex'))"
    )
    want = subprocess.run(
        [node, "-e", script], input=json.dumps(payload), capture_output=True, text=True, check=True
    ).stdout
    assert payload_hash(payload) == want
