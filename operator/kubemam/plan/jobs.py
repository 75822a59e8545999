"""Pure builders of the batch/v1 Jobs that run `kubemam worker <step>`.

A Job's pod template is immutable, so a changed input is a new Job under a new name:
the name carries the hash of every input of the step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubemam import __version__
from kubemam.api.common import API_VERSION, GROUP
from kubemam.config import OperatorConfig
from kubemam.plan import staging
from kubemam.plan.hashing import input_hash, step_job_name
from kubemam.steps.registry import MiB, quantity
from kubemam.steps.registry import step as registered_step

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_ASSET = f"{GROUP}/asset"
LABEL_STEP = f"{GROUP}/step"
ANNOTATION_INPUT_HASH = f"{GROUP}/input-hash"
ANNOTATION_WORKER_VERSION = f"{GROUP}/worker-version"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
STEP_INPUT_ENV = "KUBEMAM_STEP_INPUT"
# A worker exits with this code when retrying cannot help (bad input, wrong checksum, not media):
# the Job's podFailurePolicy then fails the Job at once instead of spending its backoffLimit.
PERMANENT_FAILURE_EXIT_CODE = 2
WORKER_UID = 65532  # the worker image's non-root user
WORK_DIR_LIMIT = 512 * MiB  # /work, the working directory: ffmpeg's logs; scratch is in /tmp (TMPDIR)

MANAGED_SELECTOR = {LABEL_MANAGED_BY: "kubemam"}


def asset_label(name: str) -> str:
    """The asset's name as a label value (at most 63 characters); Jobs are matched by owner uid anyway."""
    return name[:63].rstrip("-.")


def asset_jobs_selector(name: str) -> dict[str, str]:
    """The labels of every step Job of an asset (filter by owner uid: an earlier asset may share the name)."""
    return {**MANAGED_SELECTOR, LABEL_ASSET: asset_label(name)}


@dataclass(frozen=True)
class Owner:
    """The resource a Job belongs to; the garbage collector removes the Job with it."""

    kind: str
    name: str
    uid: str
    namespace: str


@dataclass(frozen=True)
class StepJobRequest:
    owner: Owner
    step: str
    inputs: dict[str, Any]
    resources: dict[str, Any] | None = None
    priority_class_name: str | None = None
    queue_name: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)
    completions: int | None = None  # set: an Indexed Job, one index per unit of work (a chunk)
    parallelism: int | None = None
    # Secrets by reference only: (Secret, mount path) read-only volumes (several at one path: one projected
    # volume), (variable, Secret, key) env.
    secret_mounts: tuple[tuple[str, str], ...] = ()
    secret_env: tuple[tuple[str, str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # plain variables, e.g. where a mount is (the process node maps paths)
    backoff_limit: int | None = None  # None: the operator's default
    # Files the step reads beside its input (a feed): always staged, never in the env (plan/staging.py).
    files: tuple[tuple[str, str], ...] = ()
    # Bytes the step brings to local disk (the master; the renditions it packages): sizes its scratch
    # (steps/registry.py Scratch). None: not known yet (ingest), the step's ceiling for an unknown master.
    scratch_bytes: int | None = None

    @property
    def digest(self) -> str:
        # The worker version is an input too: a new worker re-runs nothing it already did
        # only if its output format did not change, which is the worker's to declare.
        identity: dict[str, Any] = {"step": self.step, "inputs": self.inputs, "worker": __version__}
        if self.files:
            identity["files"] = {key: staging.sha256(text) for key, text in self.files}
        return input_hash(identity)

    @property
    def name(self) -> str:
        return step_job_name(self.owner.name, self.step, self.digest)


def restricted_pod_security() -> dict[str, Any]:
    """Pod-level settings that meet the Pod Security Standard "restricted"."""
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _input_env(text: str, staged: dict[str, str]) -> list[dict[str, Any]]:
    """The input inline, or (staged) where its file is and the sha256 the worker checks it against."""
    env: list[dict[str, Any]] = []
    if staging.INPUT_KEY in staged:
        env += [{"name": staging.INPUT_FILE_ENV, "value": f"{staging.STAGED_DIR}/{staging.INPUT_KEY}"},
                {"name": staging.INPUT_SHA256_ENV, "value": staging.sha256(text)}]
    else:
        env.append({"name": STEP_INPUT_ENV, "value": text})
    if staged:
        env.append({"name": staging.STAGED_DIR_ENV, "value": staging.STAGED_DIR})
    return env


def _env(request: StepJobRequest, config: OperatorConfig, text: str, staged: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        *_input_env(text, staged),
        {"name": "KUBEMAM_STEP", "value": request.step},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HOME", "value": "/work"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    if config.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": config.s3_endpoint})
    if config.s3_retry_seconds is not None:
        env.append({"name": "KUBEMAM_S3_RETRY_SECONDS", "value": f"{config.s3_retry_seconds:g}"})
    if config.s3_credentials_secret:
        # Credentials only ever travel by reference; the Job never holds their values.
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append(
                {"name": var, "valueFrom": {"secretKeyRef": {"name": config.s3_credentials_secret, "key": var}}}
            )
    for var, value in request.env:
        env.append({"name": var, "value": value})
    for var, secret, key in request.secret_env:
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return env


def build_step_job(request: StepJobRequest, config: OperatorConfig) -> dict[str, Any]:
    """The Job manifest for one step of one owner. The step must be registered and its input must
    validate against the step's model: a planner bug fails here, not in a pod. An input too big for the
    environment is staged (a StagedJob); one too big to stage raises staging.StepInputTooLarge."""
    step = registered_step(request.step)
    step.validate_input(request.inputs)
    text, staged = staging.check(request.step, request.inputs, dict(request.files))
    labels = {
        LABEL_NAME: "kubemam",
        LABEL_MANAGED_BY: "kubemam",
        LABEL_COMPONENT: "worker",
        LABEL_ASSET: request.owner.name,
        LABEL_STEP: request.step,
        **request.extra_labels,
    }
    labels[LABEL_ASSET] = asset_label(request.owner.name)
    job_labels = dict(labels)
    if request.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = request.queue_name
    annotations = {ANNOTATION_INPUT_HASH: request.digest, ANNOTATION_WORKER_VERSION: __version__}

    container: dict[str, Any] = {
        "name": "worker",
        "image": config.worker_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["kubemam", "worker", step.name],
        "env": _env(request, config, text, staged),
        "workingDir": "/work",
        "securityContext": restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "work", "mountPath": "/work"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    resources = copy.deepcopy(request.resources or step.resources.to_wire())
    # Scratch is on the emptyDirs (the root filesystem is read-only): the request places the pod where
    # the disk is, sizeLimit bounds what it may write (the kubelet evicts past it).
    resources.setdefault("requests", {})["ephemeral-storage"] = quantity(
        step.scratch.request(request.scratch_bytes) + WORK_DIR_LIMIT)
    container["resources"] = resources
    extra_volumes = []
    by_path: dict[str, list[str]] = {}
    for secret, mount_path in request.secret_mounts:
        by_path.setdefault(mount_path, []).append(secret)
    for index, (mount_path, names) in enumerate(by_path.items()):
        # Several Secrets at one path (a content-key Secret per tier) share one projected volume.
        source: dict[str, Any] = ({"secret": {"secretName": names[0], "defaultMode": 0o440}} if len(names) == 1
                                  else {"projected": {"sources": [{"secret": {"name": n}} for n in names],
                                                      "defaultMode": 0o440}})
        extra_volumes.append({"name": f"secret-{index}", **source})
        container["volumeMounts"].append({"name": f"secret-{index}", "mountPath": mount_path, "readOnly": True})
    if staged:
        extra_volumes.append({"name": staging.STAGED_VOLUME, "configMap": {
            "name": staging.config_map_name(request.name), "defaultMode": 0o444}})
        container["volumeMounts"].append({"name": staging.STAGED_VOLUME, "mountPath": staging.STAGED_DIR,
                                          "readOnly": True})

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "work", "emptyDir": {"sizeLimit": quantity(WORK_DIR_LIMIT)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": quantity(step.scratch.size_limit(request.scratch_bytes))}},
            *extra_volumes,
        ],
    }
    if config.worker_service_account:
        pod_spec["serviceAccountName"] = config.worker_service_account
    if request.priority_class_name:
        pod_spec["priorityClassName"] = request.priority_class_name

    spec: dict[str, Any] = {
        "backoffLimit": next(limit for limit in (request.backoff_limit, step.backoff_limit, config.job_backoff_limit)
                             if limit is not None),
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                  "values": [PERMANENT_FAILURE_EXIT_CODE]}},
            # A pod evicted or preempted did nothing wrong: not counted against backoffLimit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]},
        "activeDeadlineSeconds": config.job_active_deadline_seconds or step.deadline_seconds,
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod_spec},
    }
    if request.completions is not None:
        # Each index gets JOB_COMPLETION_INDEX; the Job controller retries a failed index alone.
        spec |= {"completionMode": "Indexed", "completions": request.completions,
                 "parallelism": request.parallelism or 1}
    if request.queue_name:
        # Kueue admits a suspended Job by un-suspending it once its queue has quota.
        spec["suspend"] = True

    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.name,
            "namespace": request.owner.namespace,
            "labels": job_labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": request.owner.kind,
                    "name": request.owner.name,
                    "uid": request.owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
    return staging.StagedJob(manifest, staged) if staged else manifest
