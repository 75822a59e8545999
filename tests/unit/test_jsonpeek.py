"""jsonpeek reads the fields asked for with the values json.loads gives them, wherever they sit (each key
written once, as the API server writes them), and stops once it has them."""

from __future__ import annotations

import json

import pytest

from kubemam import jsonpeek

JOB = {"kind": "Job", "apiVersion": "batch/v1",
       "metadata": {"name": "ingest-abc", "namespace": "default", "uid": "5f0e-uid",
                    "labels": {"uid": "not this one"},
                    "ownerReferences": [{"kind": "MediaAsset", "name": "ep1", "uid": "owner-uid"}],
                    "managedFields": [{"manager": "kubemam", "fieldsV1": {"f:spec": {"f:template": {}}}}]},
       "spec": {"template": {"spec": {"containers": [{"env": [{"name": "KUBEMAM_STEP_INPUT",
                                                               "value": "{\"uid\": \"\\u00e9\"}"}]}]}}},
       "status": {}}


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_the_fields_asked_for_are_read_as_a_full_decode_reads_them(separators: tuple[str, str]) -> None:
    text = json.dumps(JOB, separators=separators, indent=None if separators == (",", ":") else 2)
    assert jsonpeek.peek(text, ("metadata",), {"uid"}) == {"uid": "5f0e-uid"}
    assert jsonpeek.peek(text.encode(), ("metadata",), {"uid", "name", "labels"}) == {
        "uid": "5f0e-uid", "name": "ingest-abc", "labels": {"uid": "not this one"}}
    assert jsonpeek.peek(text, (), {"kind", "status"}) == {"kind": "Job", "status": {}}
    assert jsonpeek.peek(text, ("spec", "template"), {"spec"}) == JOB["spec"]["template"]


def test_any_order_and_missing_fields() -> None:
    reordered = {"status": {"active": 1}, "spec": JOB["spec"], "metadata": {"uid": "u", "name": "n"}}
    text = json.dumps(reordered)
    assert jsonpeek.peek(text, ("metadata",), {"uid", "name"}) == {"uid": "u", "name": "n"}
    assert jsonpeek.peek(text, ("metadata",), {"uid", "generation"}) == {"uid": "u"}
    assert jsonpeek.peek(text, ("nothing",), {"uid"}) == {}
    assert jsonpeek.peek("{}", ("metadata",), {"uid"}) == {}


def test_it_stops_once_the_fields_are_found() -> None:
    """What follows the fields is never decoded: here it is not even JSON."""
    assert jsonpeek.peek('{"metadata": {"uid": "u", "managedFields": [garbage', ("metadata",), {"uid"}) == {
        "uid": "u"}


@pytest.mark.parametrize("text", ['[1, 2]', '{"metadata": null}', '{"metadata": {"uid" "u"}}',
                                  '{"metadata": {"name": "n" "uid": "u"}}', ''])
def test_text_that_is_not_such_a_document_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        jsonpeek.peek(text, ("metadata",), {"uid"})
