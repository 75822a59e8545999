"""The step contract (steps/registry.py): every Job a planner can emit names a registered step, its input
validates against that step's model, and `kubemam worker <step>` runs the step's own entry point — it gets
past the CLI and the input check and fails only on what the test withholds (a reachable S3).

The chunked ladder once emitted `kubemam worker transcode-chunks`, a step the CLI did not know: every
chunked transcode failed with argparse's exit 2. This walk would have caught it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kubemam.api.asset import StorageCopy, StorageStatus
from kubemam.api.ladder import Chunking
from kubemam.plan import staging
from kubemam.plan.archiving import FIXITY_ANNOTATION, plan_archive, purge_request
from kubemam.plan.asset import JobObservation, plan_asset
from kubemam.plan.distribution import CreateJob, plan_distribution
from kubemam.plan.jobs import STEP_INPUT_ENV, build_step_job
from kubemam.plan.jobstate import observe_job, worker_error
from kubemam.steps.registry import STEPS
from tests.unit import test_archive_plan as archive_case
from tests.unit import test_distribution_plan as distribution_case
from tests.unit import test_plan_package as package_case
from tests.unit import test_plan_transcode as transcode_case


def _step(job: dict[str, Any]) -> str:
    return str(job["metadata"]["labels"]["kubemam.io/step"])


def _emitted() -> dict[str, dict[str, Any]]:
    """One Job of every kind the planners emit, walked through an asset's life."""
    jobs: dict[str, dict[str, Any]] = {}

    def keep(created: list[dict[str, Any]]) -> None:
        for job in created:
            jobs.setdefault(_step(job), job)

    ladder = transcode_case._ladder()
    first = transcode_case._facts(ladder)
    keep(plan_asset(replace(first, jobs=[]), transcode_case.CONFIG, transcode_case.NOW).create_jobs)  # ingest
    keep(plan_asset(first, transcode_case.CONFIG, transcode_case.NOW).create_jobs)  # transcode, one pass

    chunked = transcode_case._facts(ladder.model_copy(update={"chunking": Chunking(chunk_seconds=6)}))
    chunks = plan_asset(chunked, transcode_case.CONFIG, transcode_case.NOW).create_jobs
    keep(chunks)  # transcode-chunks
    done = JobObservation(chunks[0]["metadata"]["name"], "transcode-chunks", "h", "Succeeded")
    stitch = plan_asset(replace(chunked, jobs=[*chunked.jobs, done]), transcode_case.CONFIG, transcode_case.NOW)
    assert [_step(j) for j in stitch.create_jobs] == ["transcode"]
    jobs["transcode (stitch)"] = stitch.create_jobs[0]

    keep(package_case._after_transcode(package_case._ladder()).create_jobs)  # package, DRM keys by Secret

    policy = archive_case._policy(migration={"enabled": True}, formatsAtRisk=["mpeg2video"])
    keep(plan_archive(archive_case._facts(policy), archive_case.CONFIG, archive_case.NOW).create_jobs)  # archive
    copies = [StorageCopy(location=loc.name, uri=f"{loc.uri}/media/ep1", storage_class="STANDARD")
              for loc in policy.locations[:2]]
    archived = archive_case._facts(policy, StorageStatus(copies=copies, tier="hot",
                                                         archived_at=archive_case.NOW - timedelta(days=1)),
                                   annotations={FIXITY_ANNOTATION: "now"})
    keep(plan_archive(archived, archive_case.CONFIG, archive_case.NOW).create_jobs)  # fixity, migrate
    keep([build_step_job(purge_request("ep1", "media", "uid-1", policy, copies, archive_case.CONFIG),
                         archive_case.CONFIG)])
    rights = plan_distribution(distribution_case._facts(), distribution_case.CONFIG, distribution_case._at(1))
    keep([w.job for w in rights.of(CreateJob)])  # distribute
    return jobs


EMITTED = _emitted()


def test_the_planners_emit_every_registered_step() -> None:
    assert {_step(job) for job in EMITTED.values()} == set(STEPS)


@pytest.mark.parametrize("name", sorted(STEPS))
def test_every_registered_step_names_models_and_an_entry_point_that_exist(name: str) -> None:
    from pydantic import BaseModel

    from kubemam.steps.base import StepResult

    step = STEPS[name]
    assert issubclass(step.input_model, BaseModel)
    assert step.result_model is None or issubclass(step.result_model, StepResult)
    assert callable(step.load_entry())


def test_a_worker_imports_its_own_steps_models_only() -> None:
    """A Job's start pays for what its worker imports: the archive worker (a tier move of a few seconds)
    must not build the asset's schema or the other steps' models."""
    code = ("import sys; from kubemam.worker.steps import STEPS; STEPS['archive'].input_model; "
            "import kubemam.worker.archive; print(','.join(m for m in sys.modules if m.startswith('kubemam.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(",")
    assert "kubemam.steps.archive" in loaded
    assert not {"kubemam.api.asset", "kubemam.steps.ingest", "kubemam.steps.package"} & set(loaded), loaded


@pytest.mark.parametrize("kind", sorted(EMITTED))
def test_every_emitted_job_names_a_registered_step_whose_model_takes_its_input(kind: str) -> None:
    job = EMITTED[kind]
    container = job["spec"]["template"]["spec"]["containers"][0]
    step = STEPS[_step(job)]
    assert container["command"] == ["kubemam", "worker", step.name]
    inputs = json.loads(next(e["value"] for e in container["env"] if e["name"] == STEP_INPUT_ENV))
    step.validate_input(inputs)
    assert callable(step.load_entry())
    assert job["spec"]["activeDeadlineSeconds"] == step.deadline_seconds
    assert container["resources"]["requests"]["cpu"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_worker(step: str, inputs: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    message = tmp_path / f"{step}-termination-log"
    environ = {**os.environ, STEP_INPUT_ENV: json.dumps(inputs), "KUBEMAM_TERMINATION_MESSAGE_PATH": str(message),
               "TMPDIR": str(tmp_path), "HOME": str(tmp_path), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}",
               "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "KUBEMAM_S3_RETRY_SECONDS": "0",
               "AWS_MAX_ATTEMPTS": "1", "JOB_COMPLETION_INDEX": "0", **(env or {})}
    result = subprocess.run([sys.executable, "-m", "kubemam", "worker", step], env=environ, capture_output=True,
                            text=True, timeout=120)
    return result, json.loads(message.read_text()) if message.exists() else {}


@pytest.mark.parametrize("kind", sorted(EMITTED))
def test_every_emitted_job_runs_its_workers_entry_point(kind: str, tmp_path: Path) -> None:
    """With S3 out of reach the step's own code fails as a transient fault: exit 1 (the Job retries),
    its words in the termination message — never the CLI's exit 2 for an unknown step or bad input."""
    job = EMITTED[kind]
    container = job["spec"]["template"]["spec"]["containers"][0]
    inputs = json.loads(next(e["value"] for e in container["env"] if e["name"] == STEP_INPUT_ENV))
    # Files staged beside the input (a distribute Job's feeds) are mounted, as the kubelet would.
    staged = tmp_path / "staged"
    staged.mkdir()
    for key, text in staging.staged_files(job).items():
        (staged / key).write_text(text)
    result, message = _run_worker(container["command"][2], inputs, tmp_path, {staging.STAGED_DIR_ENV: str(staged)})
    assert result.returncode == 1, result.stderr[-2000:]
    assert message.get("retryable") is True and "the Job retries it" in message["error"], message
    assert "invalid choice" not in result.stderr


def test_an_unknown_step_and_a_refused_input_fail_permanently_in_words(tmp_path: Path) -> None:
    result, message = _run_worker("transcode-chunkz", {}, tmp_path)
    assert result.returncode == 2
    assert "unknown step 'transcode-chunkz'" in message["error"] and "transcode-chunks" in message["error"]

    result, message = _run_worker("ingest", {"source": {"uri": "s3://b/k"}}, tmp_path)
    assert result.returncode == 2
    assert message["error"] == "ingest: input needs output", message


def test_the_workers_words_reach_the_asset_whatever_the_failure() -> None:
    failed = {"metadata": {"name": "ep1-ingest-1", "labels": {"kubemam.io/step": "ingest"}},
              "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                         "message": "Container worker for pod x failed with exit code 2"}]}}
    step_error = json.dumps({"error": "ingest: unknown step 'x'"})
    assert observe_job(failed, step_error).message == "ingest: unknown step 'x'"
    # A process killed before it could write its JSON: the kubelet keeps the log tail; its last line says why.
    crash = "Traceback (most recent call last):\n  File \"x.py\", line 1\nMemoryError: cannot allocate 8 GiB\n"
    assert observe_job(failed, crash).message == "MemoryError: cannot allocate 8 GiB"
    assert observe_job(failed, None).message == "PodFailurePolicy: Container worker for pod x failed with exit code 2"
    assert worker_error("") is None
