"""Which masters a chunk pod reads by ranges, what it trusts for that, and the disk its Job asks for."""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import replace
from typing import Any

import pytest

from kubemam.api.asset import TechnicalMetadata
from kubemam.plan.asset import plan_asset
from kubemam.plan.jobs import WORK_DIR_LIMIT
from kubemam.plan.jobstate import JobObservation
from kubemam.plan.transcode import RANGE_OVERLAP, chunk_scratch_bytes, chunking, master_facts, transcode_inputs
from kubemam.steps.ingest import compact_result
from kubemam.steps.registry import STEPS, quantity
from kubemam.steps.transcode import TranscodeInput
from kubemam.worker.contract import StepError
from kubemam.worker.transcode import master_vouch
from tests.unit import test_plan_transcode as transcode_case
from tests.unit.test_step_scratch import _pod

GiB = 1024**3
SHA = hashlib.sha256(b"the master").hexdigest()
ETAG = "9b2cf535f27731c974343645a3985328-12"  # a multipart upload's: no checksum of the whole object
URI = "s3://kubemam-library/incoming/feature.mov"
SIZE = 600 * GiB


def _technical(**changes: Any) -> TechnicalMetadata:
    return transcode_case.TECHNICAL.model_copy(update={"size_bytes": SIZE, **changes})


def _chunk_and_stitch(technical: TechnicalMetadata) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chunk Job the planner makes for this master, and the stitch Job after it."""
    ladder = transcode_case._ladder(chunking={"chunkSeconds": 10, "maxParallel": 2})
    facts = transcode_case._facts(ladder)
    ingest = facts.jobs[0]
    ingested = JobObservation(ingest.name, ingest.step, "h", "Succeeded",
                              result={"technical": technical.to_wire(), "qc": {"verdict": "Passed"}})
    chunks = plan_asset(replace(facts, jobs=[ingested]), transcode_case.CONFIG, transcode_case.NOW).create_jobs[0]
    finished = JobObservation(chunks["metadata"]["name"], "transcode-chunks", "h", "Succeeded")
    stitch = plan_asset(replace(facts, jobs=[ingested, finished]), transcode_case.CONFIG,
                        transcode_case.NOW).create_jobs[0]
    return chunks, stitch


def _expected_request(step: str, scratch_bytes: int) -> int:
    return _pod_bytes(quantity(STEPS[step].scratch.request(scratch_bytes) + WORK_DIR_LIMIT))


def _pod_bytes(value: str) -> int:
    return int(value[:-2]) * {"Mi": 1024**2, "Gi": GiB}[value[-2:]]


def test_a_recorded_etag_goes_to_the_chunks_source_and_the_step_model_accepts_it() -> None:
    ladder = transcode_case._ladder(chunking={"chunkSeconds": 10, "maxParallel": 2})
    technical = _technical(etag=ETAG)
    plan = chunking(ladder, master_facts(technical))
    assert plan is not None
    inputs = transcode_inputs(URI, technical, ladder, [], "chunk", "s3://b/chunks", plan)
    assert inputs["source"] == {"uri": URI, "sha256": technical.sha256, "etag": ETAG}
    assert TranscodeInput.model_validate(inputs).source.etag == ETAG
    # Without one the input is what it was before ETags were recorded: the same Job names for older assets.
    older = transcode_inputs(URI, _technical(), ladder, [], "chunk", "s3://b/chunks", plan)
    assert older["source"] == {"uri": URI, "sha256": technical.sha256}


def test_a_chunk_that_reads_ranges_asks_for_its_share_of_the_disk_not_the_whole_master() -> None:
    assert chunk_scratch_bytes(URI, _technical(etag=ETAG), 4) == math.ceil(SIZE / 4 * RANGE_OVERLAP)
    # No ETag (ingested before it was recorded) or not on S3: a chunk pod may fetch the master whole.
    assert chunk_scratch_bytes(URI, _technical(), 4) == SIZE
    assert chunk_scratch_bytes("https://cdn.example/feature.mov", _technical(etag=ETAG), 4) == SIZE
    assert chunk_scratch_bytes(URI, _technical(etag=ETAG, size_bytes=None), 4) is None


def test_the_chunk_job_requests_the_share_and_the_stitch_job_the_whole_master() -> None:
    chunks, stitch = _chunk_and_stitch(_technical(etag=ETAG))
    count = chunks["spec"]["completions"]
    assert count == 4
    share = math.ceil(SIZE / count * RANGE_OVERLAP)
    request, limits = _pod(chunks)
    assert request == _expected_request("transcode-chunks", share)
    assert request < SIZE / 2  # 600 GiB in four chunks: about 285 GiB each with the step's headroom
    assert limits["tmp"] == _pod_bytes(quantity(2 * STEPS["transcode-chunks"].scratch.request(share)))
    stitch_request, _ = _pod(stitch)  # the stitch fetches the master whole for the audio renditions
    assert stitch_request == _expected_request("transcode", SIZE)


def test_without_a_recorded_etag_every_chunk_job_still_asks_for_the_whole_master() -> None:
    chunks, _ = _chunk_and_stitch(_technical())
    request, _ = _pod(chunks)
    assert request == _expected_request("transcode-chunks", SIZE)


def _head(etag: str = ETAG, **extra: Any) -> dict[str, Any]:
    """An S3 HEAD response as botocore returns it: the ETag in quotes."""
    return {"ETag": f'"{etag}"', "ContentLength": 1000, **extra}


def test_the_store_vouches_by_a_full_object_sha256_or_a_verified_copys_metadata() -> None:
    b64 = base64.b64encode(bytes.fromhex(SHA)).decode()
    assert master_vouch(URI, _head(ChecksumSHA256=b64), SHA, None) == "sha256"
    assert master_vouch(URI, _head(Metadata={"sha256": SHA}), SHA, None) == "copy"
    # A composite (multipart) checksum is not the whole object's; a different digest vouches for nothing.
    assert master_vouch(URI, _head(ChecksumSHA256=f"{b64}-3"), SHA, None) is None
    assert master_vouch(URI, _head(Metadata={"sha256": "00" * 32}), SHA, None) is None


def test_the_etag_ingest_recorded_vouches_for_the_version_it_hashed() -> None:
    assert master_vouch(URI, _head(), SHA, ETAG) == "etag"
    assert master_vouch(URI, _head(), None, ETAG) == "etag"


def test_an_overwritten_master_fails_naming_the_change_instead_of_being_fetched_whole() -> None:
    with pytest.raises(StepError) as err:
        master_vouch(URI, _head("0f343b0931126a20f133d67c2b018a3b-12"), SHA, ETAG)
    message = str(err.value)
    assert "changed since ingest" in message and URI in message
    assert ETAG in message and "0f343b0931126a20f133d67c2b018a3b-12" in message and "re-ingest" in message


def test_a_rewrite_with_the_same_bytes_is_vouched_for_by_the_stores_checksum() -> None:
    b64 = base64.b64encode(bytes.fromhex(SHA)).decode()
    assert master_vouch(URI, _head("another-etag", ChecksumSHA256=b64), SHA, ETAG) == "sha256"


def test_with_no_etag_and_no_checksum_the_master_is_fetched_whole() -> None:
    assert master_vouch(URI, _head(), SHA, None) is None


def test_the_smallest_ingest_result_keeps_what_transcode_plans_from() -> None:
    technical = _technical(etag=ETAG, container="x" * 5000).to_wire()
    small = compact_result({"technical": technical, "qc": {"verdict": "Passed"}, "manifest": "s3://b/m.json"})
    assert "container" not in small["technical"]  # the essentials alone
    assert small["technical"]["etag"] == ETAG and small["technical"]["sizeBytes"] == SIZE
    assert small["technical"]["sha256"] == technical["sha256"]
