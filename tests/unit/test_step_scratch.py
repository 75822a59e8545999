"""Step pods ask for the local disk their input needs and are bounded by it (ephemeral storage)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kubemam.plan.asset import plan_asset
from kubemam.plan.jobs import WORK_DIR_LIMIT, Owner, StepJobRequest, build_step_job
from kubemam.plan.jobstate import JobObservation
from kubemam.steps.registry import STEPS, UNKNOWN_MASTER_CEILING, GiB, MiB, quantity
from tests.unit import test_plan_transcode as transcode_case
from tests.unit.test_step_contract import EMITTED

OWNER = Owner("MediaAsset", "feature", "0b6e7c1e-0000-4000-8000-000000000001", "media")
UNITS = {"Mi": MiB, "Gi": GiB}


def _bytes(value: str) -> int:
    return int(value[:-2]) * UNITS[value[-2:]]


def _pod(job: dict[str, Any]) -> tuple[int, dict[str, int]]:
    spec = job["spec"]["template"]["spec"]
    request = _bytes(spec["containers"][0]["resources"]["requests"]["ephemeral-storage"])
    return request, {v["name"]: _bytes(v["emptyDir"]["sizeLimit"]) for v in spec["volumes"] if "emptyDir" in v}


@pytest.mark.parametrize("kind", sorted(EMITTED))
def test_every_step_job_requests_disk_and_bounds_every_empty_dir(kind: str) -> None:
    request, limits = _pod(EMITTED[kind])
    assert set(limits) == {"work", "tmp"} and limits["work"] == WORK_DIR_LIMIT
    assert request <= sum(limits.values())


def test_the_request_grows_with_the_master_and_the_limit_leaves_room() -> None:
    master = 400 * GiB
    for step, (per_byte, base) in {"ingest": (1.1, 2), "transcode": (1.5, 4), "transcode-chunks": (1.5, 4),
                                   "migrate": (4, 2), "archive": (0, 1)}.items():
        inputs = build_inputs(step)
        job = build_step_job(StepJobRequest(OWNER, step, inputs, scratch_bytes=master), transcode_case.CONFIG)
        request, limits = _pod(job)
        expected = base * GiB + int(per_byte * master)
        assert request == _bytes(quantity(expected + WORK_DIR_LIMIT)), step
        assert limits["tmp"] == _bytes(quantity(2 * expected)), step


def test_a_master_of_unknown_size_gets_the_ceiling_not_an_unbounded_dir() -> None:
    job = build_step_job(StepJobRequest(OWNER, "ingest", build_inputs("ingest")), transcode_case.CONFIG)
    request, limits = _pod(job)
    assert request == 2 * GiB + WORK_DIR_LIMIT
    assert limits["tmp"] >= 1.1 * UNKNOWN_MASTER_CEILING


def test_the_ladders_own_resources_keep_their_values_and_gain_the_disk_request() -> None:
    ladder = transcode_case._ladder()
    facts = transcode_case._facts(ladder)
    ingest = facts.jobs[0]
    sized = {**ingest.result, "technical": {**ingest.result["technical"], "sizeBytes": 300 * GiB}}  # type: ignore[index]
    facts = replace(facts, jobs=[JobObservation(ingest.name, ingest.step, "h", "Succeeded", result=sized)])
    job = plan_asset(facts, transcode_case.CONFIG, transcode_case.NOW).create_jobs[0]
    assert job["metadata"]["labels"]["kubemam.io/step"] == "transcode"
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "2"  # the ladder's
    assert _bytes(resources["requests"]["ephemeral-storage"]) >= 1.5 * 300 * GiB  # the master's size
    assert STEPS["transcode"].resources.to_wire()["requests"].get("ephemeral-storage") is None


def build_inputs(step: str) -> dict[str, Any]:
    """A valid input for the step, from the Jobs the planners emit."""
    import json

    job = EMITTED[step]
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return dict(json.loads(next(e["value"] for e in env if e["name"] == "KUBEMAM_STEP_INPUT")))
