"""Step inputs that cannot outgrow the environment (plan/staging.py): sizes in UTF-8 bytes as serialized,
inline below the inline limit, staged in a ConfigMap owned by the Job above it, refused (a condition
naming the field, no Job) above what a ConfigMap holds — and the largest specs the CRD schemas accept
never make a Job whose container cannot start."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemam.api.asset import MediaAssetSpec
from kubemam.archive.ebucore import RightsSummary
from kubemam.config import OperatorConfig
from kubemam.plan import staging
from kubemam.plan.archiving import plan_archive
from kubemam.plan.asset import plan_asset
from kubemam.plan.jobs import STEP_INPUT_ENV, Owner, StepJobRequest, build_step_job
from kubemam.worker import contract
from tests.unit import test_archive_plan as archive_case
from tests.unit import test_plan_package as package_case
from tests.unit import test_plan_transcode as transcode_case

CONFIG = OperatorConfig()
OWNER = Owner("MediaAsset", "ep1", "uid-1", "media")
CRDS = Path(__file__).parents[2] / "crds"
LINUX_MAX_ARG_STRLEN = 128 * 1024  # one "NAME=value\0" string of the environment
CONFIG_MAP_MAX = 1024 * 1024  # the API server's limit on a ConfigMap's data
ETCD_REQUEST_MAX = int(1.5 * 1024 * 1024)


def _request(**inputs: Any) -> StepJobRequest:
    return StepJobRequest(OWNER, "ingest", {"source": {"uri": "s3://lib/a.mov"}, "output": "s3://lib/o", **inputs})


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


def _env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in _container(job)["env"]}


def _can_start(job: dict[str, Any]) -> None:
    """What Linux and the API server would refuse: an env string over 128 KiB, a ConfigMap over 1 MiB."""
    for name, value in _env(job).items():
        assert len(f"{name}={value or ''}".encode()) + 1 <= LINUX_MAX_ARG_STRLEN, name
    config_map = staging.config_map(job)
    if config_map is not None:
        assert sum(len(k.encode()) + len(v.encode()) for k, v in config_map["data"].items()) <= CONFIG_MAP_MAX
        assert len(json.dumps(config_map, ensure_ascii=False).encode()) < ETCD_REQUEST_MAX


def _markers(char: str, count: int, name_length: int = 128, note_length: int = 1024) -> list[dict[str, Any]]:
    return [{"name": f"m{i:04d}" + char * (name_length - 5), "kind": "note", "start": "00:00:01:00",
             "note": char * note_length} for i in range(count)]


# --- size accounting ---------------------------------------------------------------------------

def test_sizes_are_utf8_bytes_as_serialized_not_escapes() -> None:
    assert staging.serialize({"b": "é", "a": 1}) == '{"a":1,"b":"é"}'
    assert staging.utf8_size(staging.serialize("😀")) == 6  # two quotes and 4 bytes, not a 12-byte \\ud83d\\ude00
    assert staging.utf8_size(json.dumps("😀")) == 14  # what ensure_ascii would have cost
    assert staging.human(900 * 1024) == "900 KiB" and staging.human(1536) == "1.5 KiB"
    assert staging.human(int(1.9 * 1024 * 1024)) == "1.9 MiB" and staging.human(12) == "12 B"


def test_a_small_input_travels_inline_unescaped() -> None:
    job = build_step_job(_request(markers=_markers("é", 2, 10, 10)), CONFIG)
    assert not isinstance(job, staging.StagedJob) and staging.config_map(job) is None
    env = _env(job)
    assert "é" in env[STEP_INPUT_ENV] and staging.INPUT_FILE_ENV not in env
    assert json.loads(env[STEP_INPUT_ENV])["markers"][0]["note"] == "é" * 10
    assert all(v["name"] != staging.STAGED_VOLUME for v in job["spec"]["template"]["spec"]["volumes"])


def _inline_size(request: StepJobRequest) -> int:
    return staging.utf8_size(staging.serialize(request.inputs))


def _padded_to(limit: int) -> list[dict[str, Any]]:
    """Markers whose ingest input serializes to exactly `limit` UTF-8 bytes (notes are at most 1024)."""
    markers: list[dict[str, Any]] = []
    while True:
        last = {"name": f"m{len(markers)}", "kind": "note", "start": "00:00:01:00", "note": ""}
        pad = limit - _inline_size(_request(markers=[*markers, last]))
        if pad <= 1024:
            return [*markers, {**last, "note": "x" * pad}]
        markers.append({**last, "note": "x" * 1024})


def test_the_inline_limit_is_exact_in_utf8_bytes() -> None:
    """An input of exactly the limit travels inline; one byte more (a 2-byte character in place of an ASCII
    one: the same number of characters) is staged."""
    markers = _padded_to(staging.INLINE_LIMIT)
    at_limit = _request(markers=markers)
    assert _inline_size(at_limit) == staging.INLINE_LIMIT
    assert STEP_INPUT_ENV in _env(build_step_job(at_limit, CONFIG))
    markers[-1] = {**markers[-1], "note": "é" + markers[-1]["note"][1:]}
    over = _request(markers=markers)
    assert _inline_size(over) == staging.INLINE_LIMIT + 1
    assert isinstance(build_step_job(over, CONFIG), staging.StagedJob)


def test_a_large_input_is_staged_in_a_config_map_the_job_mounts_read_only() -> None:
    request = _request(markers=_markers("x", 256))  # ~300 KB: over Linux's 128 KiB per env string
    job = build_step_job(request, CONFIG)
    assert isinstance(job, staging.StagedJob)
    text = staging.serialize(request.inputs)
    env = _env(job)
    assert STEP_INPUT_ENV not in env
    assert env[staging.INPUT_FILE_ENV] == f"{staging.STAGED_DIR}/input.json"
    assert env[staging.INPUT_SHA256_ENV] == staging.sha256(text)
    assert {"name": staging.STAGED_VOLUME, "mountPath": staging.STAGED_DIR, "readOnly": True} in \
        _container(job)["volumeMounts"]
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == staging.STAGED_VOLUME)
    config_map = staging.config_map(job)
    assert config_map is not None and volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["metadata"]["name"] == f"{job['metadata']['name']}-staged"
    assert config_map["metadata"]["namespace"] == "media" and config_map["immutable"] is True
    assert config_map["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubemam"  # the admission policy's
    assert config_map["data"] == {"input.json": text}
    # Staging changes where the input travels, not what it is: the Job's name is the hash of its inputs.
    assert job["metadata"]["name"] == request.name
    _can_start(job)
    # What the API server receives is exactly the dict: the files ride beside it, not in it.
    assert "staged" not in job and json.loads(json.dumps(job)) == dict(job)
    assert staging.owner_reference("j", "u") == {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}


def test_an_input_too_big_to_stage_is_refused_naming_the_field() -> None:
    with pytest.raises(staging.StepInputTooLarge) as refused:
        build_step_job(_request(markers=_markers("😀", 256)), CONFIG)
    message = str(refused.value)
    assert message.startswith("spec.markers (input.markers): 1.1 MiB in 256 entries makes the ingest input 1.1 MiB")
    assert "the step input limit is 900 KiB" in message and "no Job was created" in message
    assert refused.value.total > staging.STAGE_LIMIT


def test_files_beside_the_input_are_always_staged_and_counted() -> None:
    request = replace(_request(), files=(("feed-0.json", "{}"),))
    job = build_step_job(request, CONFIG)
    assert STEP_INPUT_ENV in _env(job) and _env(job)[staging.STAGED_DIR_ENV] == staging.STAGED_DIR
    assert staging.staged_files(job) == {"feed-0.json": "{}"}
    assert request.name != _request().name  # a file's content is part of the Job's identity
    big = replace(_request(), files=(("feed-0.json", "x" * (staging.STAGE_LIMIT + 1)),))
    with pytest.raises(staging.StepInputTooLarge, match="staged file feed-0.json"):
        build_step_job(big, CONFIG)


# --- the worker's side -------------------------------------------------------------------------

def test_the_worker_reads_a_staged_input_and_checks_its_digest(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    request = _request(markers=_markers("x", 256))
    job = build_step_job(request, CONFIG)
    folder = tmp_path / "staged"
    folder.mkdir()
    for key, text in staging.staged_files(job).items():
        (folder / key).write_text(text, encoding="utf-8")
    env = {k: v for k, v in _env(job).items() if k.startswith("KUBEMAM_STEP_INPUT")}
    monkeypatch.delenv(STEP_INPUT_ENV, raising=False)
    monkeypatch.setenv(staging.INPUT_FILE_ENV, env[staging.INPUT_FILE_ENV].replace(staging.STAGED_DIR, str(folder)))
    monkeypatch.setenv(staging.INPUT_SHA256_ENV, env[staging.INPUT_SHA256_ENV])
    assert contract.step_input() == request.inputs
    (folder / "input.json").write_text(staging.serialize({**request.inputs, "output": "s3://elsewhere/o"}))
    with pytest.raises(contract.StepError, match="has sha256 .*, the Job expects"):
        contract.step_input()
    monkeypatch.delenv(staging.INPUT_SHA256_ENV)
    with pytest.raises(contract.StepError, match="KUBEMAM_STEP_INPUT_SHA256 is not set"):
        contract.step_input()
    monkeypatch.delenv(staging.INPUT_FILE_ENV)
    with pytest.raises(contract.StepError, match="KUBEMAM_STEP_INPUT is not set"):
        contract.step_input()
    assert os.environ.get(STEP_INPUT_ENV) is None


# --- the largest specs the CRD schemas accept --------------------------------------------------

def _schema_limits() -> dict[str, int]:
    crd = yaml.safe_load((CRDS / "mediaassets.kubemam.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    markers, captions = spec["markers"], spec["captions"]
    return {"markers": markers["maxItems"], "marker.name": markers["items"]["properties"]["name"]["maxLength"],
            "marker.note": markers["items"]["properties"]["note"]["maxLength"],
            "captions": captions["maxItems"], "caption.uri": captions["items"]["properties"]["uri"]["maxLength"],
            "caption.label": captions["items"]["properties"]["label"]["maxLength"]}


def _largest_markers(char: str) -> list[dict[str, Any]]:
    limits = _schema_limits()
    return _markers(char, limits["markers"], limits["marker.name"], limits["marker.note"])


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])  # 1 to 4 UTF-8 bytes a character
def test_the_largest_markers_the_schema_accepts_are_staged_or_refused_never_a_job_that_cannot_start(
        char: str) -> None:
    spec = transcode_case._facts(transcode_case._ladder()).spec.to_wire()
    spec["markers"] = _largest_markers(char)
    facts = replace(transcode_case._facts(transcode_case._ladder()), spec=MediaAssetSpec.model_validate(spec), jobs=[])
    plan = plan_asset(facts, transcode_case.CONFIG, transcode_case.NOW)
    ingested = next(c for c in plan.status.conditions or [] if c.type == "Ingested")
    if char == "😀":  # 256 x 1,152 four-byte characters: over what a ConfigMap holds
        assert plan.create_jobs == [] and not plan.status.jobs
        assert (ingested.status, plan.status.phase) == ("False", "Failed")
        assert "spec.markers" in ingested.message and "the step input limit is 900 KiB" in ingested.message
        ready = next(c for c in plan.status.conditions or [] if c.type == "Ready")
        assert ready.status == "False" and "spec.markers" in ready.message
    else:
        [job] = plan.create_jobs
        assert isinstance(job, staging.StagedJob)
        _can_start(job)


def test_the_largest_captions_the_schema_accepts_fit() -> None:
    limits = _schema_limits()
    plan = package_case._after_transcode(package_case._ladder())
    [job] = plan.create_jobs
    request_inputs = json.loads(_env(job)[STEP_INPUT_ENV])
    request_inputs["captions"] = [
        {"language": f"{chr(97 + i // 26)}{chr(97 + i % 26)}", "kind": "subtitles", "format": "webvtt",
         "uri": "s3://lib/" + "c" * (limits["caption.uri"] - len("s3://lib/")), "label": "😀" * limits["caption.label"]}
        for i in range(limits["captions"])]
    labels = job["metadata"]["labels"]
    request = StepJobRequest(OWNER, labels["kubemam.io/step"], request_inputs)
    built = build_step_job(request, CONFIG)
    assert isinstance(built, staging.StagedJob)
    _can_start(built)


def test_an_archived_set_whose_sidecar_cannot_be_staged_is_refused_with_a_condition() -> None:
    """The EBUCore sidecar lists every licence window (no schema bounds their number): one covering the
    asset 60 times worldwide makes the archive input too big to stage."""
    world = sorted(_all_territories())
    rights = [RightsSummary(window=f"w-{i:03d}-" + "x" * 200, start=archive_case.NOW,
                            end=archive_case.NOW + timedelta(days=365), territories=world, channels=["svod"])
              for i in range(60)]
    facts = replace(archive_case._facts(), rights=rights)
    outcome = plan_archive(facts, archive_case.CONFIG, archive_case.NOW)
    assert not [j for j in outcome.create_jobs if j["metadata"]["labels"]["kubemam.io/step"] == "archive"]
    assert outcome.failed is not None and outcome.failed.reason == "InputTooLarge"
    assert "archive input refused" in outcome.failed.message and "900 KiB" in outcome.failed.message
    assert ("Archived", "False", "InputTooLarge") in {(v.type, v.status, v.reason) for v in outcome.verdicts}


def _all_territories() -> list[str]:
    crd = yaml.safe_load((CRDS / "rightswindows.kubemam.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return list(spec["territories"]["items"]["enum"])


# --- status and Events with a bound ------------------------------------------------------------

def _entry(index: int, territories: list[str]) -> Any:
    from kubemam.api.rights import HistoryEntry

    return HistoryEntry(at=archive_case.NOW + timedelta(seconds=index), action="Published", asset=f"t-{index:05d}",
                        channel="svod", territories=territories, target="svod-world", verified=True)


def test_window_history_in_status_is_a_tail_bounded_by_count_and_bytes() -> None:
    from kubemam.plan.rights import MAX_HISTORY, MAX_HISTORY_BYTES, history_tail

    small = [_entry(i, ["NO"]) for i in range(1000)]
    assert [e.asset for e in history_tail(small)] == [e.asset for e in small[-MAX_HISTORY:]]  # newest, in order
    world = [_entry(i, sorted(_all_territories())) for i in range(1000)]  # ~1.4 KB an entry
    kept = history_tail(world)
    assert kept == world[-len(kept):] and 10 < len(kept) < MAX_HISTORY
    assert sum(len(staging.serialize(e.to_wire()).encode()) + 1 for e in kept) <= MAX_HISTORY_BYTES
    # The CRD agrees with the planner, so the API server never refuses the tail.
    crd = yaml.safe_load((CRDS / "rightswindows.kubemam.io.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["history"]["maxItems"] == MAX_HISTORY and "usage records" in status["history"]["description"]


def test_event_and_condition_messages_are_cut() -> None:
    from kubemam.plan.conditions import MAX_CONDITION_MESSAGE, Verdict, apply_verdicts
    from kubemam.plan.distribution import window_event
    from kubemam.steps.distribute import DistributeAction

    action = DistributeAction(action="takedown", asset="a", target="svod-world", channel="svod",
                              territories=sorted(_all_territories()), window="w", origin="s3://origin/svod/ns/a")
    event = window_event("ns", "job", action, "TakenDown", archive_case.NOW)
    assert len(event["message"]) == 1024 and event["message"].startswith("a taken down from svod-world")
    [condition] = apply_verdicts([], [Verdict("Conflict", "True", "ExclusiveOverlap", "x" * 100_000)], 1,
                                 archive_case.NOW)
    assert len(condition.message) == MAX_CONDITION_MESSAGE and condition.message.endswith("…")
