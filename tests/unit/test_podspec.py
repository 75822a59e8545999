"""The process node's pure mapping from a pod spec to a local process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubemam.worker.contract import TERMINATION_PATH_ENV
from kubemam_local.podspec import (
    MissingReference,
    PodSpecError,
    ReferenceNotFound,
    cpu_millis,
    expand,
    pod_cpu_request,
    process_spec,
)

POD: dict[str, Any] = {"metadata": {"name": "p1", "namespace": "media", "uid": "u1", "labels": {"tier": "gold"}},
                       "spec": {"nodeName": "n1"}}


def _lookup(kind: str, namespace: str, name: str, key: str) -> str | None:
    if (kind, name) != ("Secret", "s3"):
        raise ReferenceNotFound(name)
    return {("Secret", "media", "s3", "AWS_ACCESS_KEY_ID"): "AKIA-test"}.get((kind, namespace, name, key))


def _container(**extra: Any) -> dict[str, Any]:
    return {"name": "worker", "image": "img:1", "command": ["kubemam", "worker", "ingest"],
            "args": ["--out", "$(WORK)/out"], "workingDir": "/work",
            "volumeMounts": [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}],
            "env": [{"name": "WORK", "value": "/work"},
                    {"name": "CACHE", "value": "$(WORK)/cache"},
                    {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                    {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}}],
            **extra}


def test_paths_under_mounts_are_rewritten_into_the_sandbox(tmp_path: Path) -> None:
    dirs = {"work": tmp_path / "v" / "work", "tmp": tmp_path / "v" / "tmp"}
    spec = process_spec(POD, _container(), tmp_path, dirs, _lookup, {"PATH": "/bin"})
    assert spec.argv == ["kubemam", "worker", "ingest", "--out", f"{dirs['work']}/out"]
    assert spec.cwd == dirs["work"]
    assert spec.env["CACHE"] == f"{dirs['work']}/cache"
    assert (spec.env["TIER"], spec.env["KEY"], spec.env["PATH"]) == ("gold", "AKIA-test", "/bin")
    assert spec.env[TERMINATION_PATH_ENV] == str(tmp_path / "termination-log")


def test_pods_the_node_cannot_run_say_why(tmp_path: Path) -> None:
    dirs = {"work": tmp_path, "tmp": tmp_path}
    with pytest.raises(PodSpecError, match="sets no command"):
        process_spec(POD, _container(command=[]), tmp_path, dirs, _lookup, {})
    # A missing Secret or key: the kubelet's words (the pod waits for it; the operator reads them).
    with pytest.raises(MissingReference, match="^couldn't find key missing in Secret media/s3$"):
        env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "missing"}}}]
        process_spec(POD, _container(env=env), tmp_path, dirs, _lookup, {})
    with pytest.raises(MissingReference, match='^secret "other" not found$'):
        env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k"}}}]
        process_spec(POD, _container(env=env), tmp_path, dirs, _lookup, {})
    with pytest.raises(PodSpecError, match="not inside a volume"):
        process_spec(POD, _container(workingDir="/opt/app"), tmp_path, dirs, _lookup, {})


def test_optional_secret_key_is_skipped(tmp_path: Path) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "missing", "optional": True}}},
           {"name": "Y", "valueFrom": {"secretKeyRef": {"name": "other", "key": "k", "optional": True}}}]
    spec = process_spec(POD, _container(env=env), tmp_path, {"work": tmp_path, "tmp": tmp_path}, _lookup, {})
    assert "X" not in spec.env and "Y" not in spec.env


def test_expansion_and_cpu_quantities() -> None:
    assert expand("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"
    assert (cpu_millis("500m"), cpu_millis("2"), cpu_millis("0.25"), cpu_millis(None)) == (500, 2000, 250, 0)
    pod = {"spec": {"containers": [{"resources": {"requests": {"cpu": "1500m"}}}, {}]}}
    assert pod_cpu_request(pod) == 1500
