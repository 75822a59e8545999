"""The operator's side effects on the API server: plain dicts in and out.

Creates tolerate 409 and deletes tolerate 404, so every caller can run twice.

Every call carries a (connect, read) timeout: a connection the API server (or a dead path to it)
accepts but never answers fails the call after `read` seconds instead of blocking its thread for
ever. A timed-out call raises urllib3's timeout error; the caller's handler or reconcile fails and is
retried with backoff, like any transient error. tests/unit/test_kubeapi_timeout.py calls every
public method against a server that never answers.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import TimeoutError as CallTimeout
from urllib3.util.retry import Retry

from kubemam import jsonpeek
from kubemam.api.common import GROUP, VERSION

_loaded = False

Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (5.0, 30.0)  # (connect, read) seconds; the operator's come from OperatorConfig
# urllib3 would retry a timed-out GET three more times (4 x the read timeout); a read error surfaces
# at once and the caller's backoff decides. Connection failures are still retried (a stale keep-alive).
_RETRIES = Retry(total=3, read=False)


def load_config() -> None:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    global _loaded
    if _loaded:
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    _loaded = True


CONNECTIONS = 32


def new_api_client(configuration: client.Configuration | None = None) -> client.ApiClient:
    """An API client with the operator's retry policy (set on `configuration`; default: a copy of the
    loaded one)."""
    if configuration is None:
        load_config()
        configuration = client.Configuration.get_default_copy()
    configuration.retries = _RETRIES
    # Kopf's 8 handler threads, the rights and asset clocks' workers and the rights writes' threads share
    # it: urllib3 drops (and later reopens) every connection past the pool's size, 5 per core by default.
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, CONNECTIONS)
    return client.ApiClient(configuration)


class JobRefused(Exception):
    """The API server will not take a step's Job or its ConfigMap as it is: RBAC, an admission policy, or
    the object's own validation. Asking again every reconcile changes nothing; the asset says why."""


def _refusal(err: ApiException, kind: str, namespace: str) -> JobRefused | None:
    """A refusal that no retry mends (403 other than a terminating namespace, 400, 422), in the API
    server's words (an admission policy's message, RBAC's verb and resource)."""
    if err.status not in (400, 403, 422) or "NamespaceTerminating" in str(err.body):
        return None
    try:
        said = str(json.loads(err.body).get("message") or "")
    except (TypeError, ValueError, AttributeError):
        said = ""
    return JobRefused(f"the API server refused the step's {kind} in namespace {namespace} "
                      f"({err.status} {err.reason}): {said or 'no reason given'}"[:1024])


def _raw(response: Any) -> Any:
    return json.loads(response.data)


def _done(response: Any) -> None:
    """Read an unread answer to its end: urllib3 hands a connection back to the pool only then. A write whose
    answer is left unread (`_preload_content=False`) costs the next call a new TLS connection."""
    response.data  # noqa: B018 (reading it is the point)


class KubeApi:
    def __init__(self, api_client: client.ApiClient | None = None, timeout: Timeout = DEFAULT_TIMEOUT) -> None:
        if api_client is None:
            api_client = new_api_client()
        self.timeout = timeout
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    # --- kubemam resources -------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = _raw(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, _preload_content=False, _request_timeout=self.timeout))
            return body
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list_objects(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        body = _raw(self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, _preload_content=False, _request_timeout=self.timeout))
        return list(body.get("items") or [])

    def add_finalizer(self, plural: str, namespace: str, name: str, finalizers: list[str], finalizer: str,
                      resource_version: str) -> str | None:
        """Add `finalizer` to the object's `finalizers` as read at `resource_version` (a merge patch replaces
        the list whole, so the API server refuses it with 409 if the object changed since). Answers the
        object's resourceVersion after the write (None: it is gone)."""
        body = {"metadata": {"finalizers": [*finalizers, finalizer], "resourceVersion": resource_version}}
        return self._merge_patch(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}", body)

    def patch_status(self, plural: str, namespace: str, name: str, status_patch: dict[str, Any],
                     resource_version: str | None = None) -> bool:
        """Merge-patch the status subresource; a vanished object is not an error (False). With
        `resource_version`, the API server refuses the patch (409) if the object changed since."""
        return self.patch_status_version(plural, namespace, name, status_patch, resource_version) is not None

    def patch_status_version(self, plural: str, namespace: str, name: str, status_patch: dict[str, Any],
                             resource_version: str | None = None) -> str | None:
        """patch_status, answering the object's resourceVersion after the write (None: it is gone)."""
        body: dict[str, Any] = {"status": status_patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._merge_patch(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status", body)

    def _merge_patch(self, path: str, body: dict[str, Any]) -> str | None:
        """A JSON merge patch of one of our objects (or its status): its resourceVersion after the write, None when
        it is gone."""
        try:
            response = self.custom.api_client.call_api(
                path,
                "PATCH",
                body=body,
                header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=self.timeout,
            )
        except ApiException as err:
            if err.status != 404:
                raise
            return None
        return str((_raw(response).get("metadata") or {}).get("resourceVersion") or "")

    # --- Jobs and pods -----------------------------------------------------------------------

    def list_jobs(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        body = _raw(self.batch.list_namespaced_job(namespace, label_selector=label_selector, _preload_content=False,
                                                 _request_timeout=self.timeout))
        return list(body.get("items") or [])

    def create_job(self, job: dict[str, Any]) -> str | None:
        """Create a Job; the uid the API server gave it, or None when it already exists (the same inputs, so
        nothing to do) or when its namespace is being deleted (nothing will ever need it). The answer (the whole
        Job, pod template and managedFields) is read for its uid alone (`jsonpeek`)."""
        try:
            response = self.batch.create_namespaced_job(job["metadata"]["namespace"], job, _preload_content=False,
                                                        _request_timeout=self.timeout)
        except ApiException as err:
            if err.status == 409 or (err.status == 403 and "NamespaceTerminating" in str(err.body)):
                return None
            refused = _refusal(err, "Job", job["metadata"]["namespace"])
            if refused is not None:
                raise refused from None
            raise
        return str(jsonpeek.peek(response.data, ("metadata",), {"uid"})["uid"])

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            body = _raw(self.core.read_namespaced_config_map(name, namespace, _preload_content=False,
                                                                  _request_timeout=self.timeout))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return dict(body.get("data") or {})

    def delete_job(self, namespace: str, name: str, foreground: bool = False) -> None:
        """Delete a Job and its pods (a failed one, to run it again); 404 is fine. `foreground`: the Job stays
        listed (deletionTimestamp set) until its pods are gone, so whoever waits on it knows when they are."""
        try:
            _done(self.batch.delete_namespaced_job(name, namespace,
                                                   propagation_policy="Foreground" if foreground else "Background",
                                                   _preload_content=False, _request_timeout=self.timeout))
        except ApiException as err:
            if err.status != 404:
                raise

    def annotate_job(self, namespace: str, name: str, annotations: dict[str, str],
                     ttl_seconds: int | None = None) -> None:
        """Annotate a Job, and (optionally, in the same patch) let it expire that long after it finished."""
        body: dict[str, Any] = {"metadata": {"annotations": annotations}}
        if ttl_seconds is not None:
            body["spec"] = {"ttlSecondsAfterFinished": ttl_seconds}
        try:
            _done(self.batch.patch_namespaced_job(name, namespace, body, _preload_content=False,
                                                  _request_timeout=self.timeout))
        except ApiException as err:
            if err.status != 404:
                raise

    def create_event(self, event: dict[str, Any]) -> None:
        """Record an Event; a lost one (the namespace is going away) is not worth failing for."""
        try:
            _done(self.core.create_namespaced_event(event["metadata"]["namespace"], event, _preload_content=False,
                                                    _request_timeout=self.timeout))
        except ApiException as err:
            if err.status not in (403, 404, 409):
                raise

    def create_secret(self, secret: dict[str, Any]) -> bool:
        """Create a Secret; False when one of that name exists already (409)."""
        try:
            _done(self.core.create_namespaced_secret(secret["metadata"]["namespace"], secret, _preload_content=False,
                                                     _request_timeout=self.timeout))
            return True
        except ApiException as err:
            if err.status == 409:
                return False
            raise

    def _job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        body = _raw(self.core.list_namespaced_pod(
            namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}", _preload_content=False,
            _request_timeout=self.timeout))
        return list(body.get("items") or [])

    def running_pod_log_tail(self, namespace: str, job_name: str, lines: int = 20) -> str | None:
        """The last lines of the log of the Job's running pod (progress lines live there)."""
        for pod in self._job_pods(namespace, job_name):
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            try:
                # Raw bytes, decoded here: the client's own deserialisation of a text body varies by version.
                response = self.core.read_namespaced_pod_log(pod["metadata"]["name"], namespace, tail_lines=lines,
                                                             _preload_content=False,
                                                             _request_timeout=self.timeout)
                return str(response.data.decode("utf-8", errors="replace"))
            except (ApiException, CallTimeout):
                return None  # logs not reachable (node gone, kubelet down): progress is best effort
        return None

    def termination_message(self, namespace: str, job_name: str) -> str | None:
        """The termination message where the worker puts its result: the succeeded pod's, else (a
        failed Job) the last failed pod's, which holds the worker's error."""
        pods = self._job_pods(namespace, job_name)
        for phase in ("Succeeded", "Failed"):
            found = None
            for pod in pods:
                if (pod.get("status") or {}).get("phase") != phase:
                    continue
                for status in (pod["status"].get("containerStatuses") or []):
                    terminated = (status.get("state") or {}).get("terminated") or {}
                    if terminated.get("message"):
                        found = str(terminated["message"])
            if found is not None:
                return found
        return None

    # --- content-key Secrets (controllers/keys.py) ---------------------------------------------

    def secret_metadata(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Secret's metadata only (PartialObjectMetadata: owners, labels, resourceVersion), never its
        data, which stays in the API server; None when there is none."""
        try:
            response = self.core.api_client.call_api(
                f"/api/v1/namespaces/{namespace}/secrets/{name}", "GET",
                header_params={"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"},
                auth_settings=["BearerToken"], _return_http_data_only=True, _preload_content=False,
                _request_timeout=self.timeout)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        metadata: dict[str, Any] = _raw(response)["metadata"]
        return metadata

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A whole Secret (base64 data included); only to carry an asset's keys over from the Secret layout
        of earlier versions, once per tier. None when there is none."""
        try:
            body: dict[str, Any] = _raw(self.core.read_namespaced_secret(name, namespace, _preload_content=False,
                                                                       _request_timeout=self.timeout))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return body

    # --- staged step inputs (plan/staging.py) ---------------------------------------------------

    def create_config_map(self, config_map: dict[str, Any]) -> bool:
        """Create a ConfigMap; False when it exists already (its name is the Job's, so its content is the
        same: the worker checks the digest anyway) or its namespace is being deleted."""
        try:
            _done(self.core.create_namespaced_config_map(config_map["metadata"]["namespace"], config_map,
                                                         _preload_content=False, _request_timeout=self.timeout))
            return True
        except ApiException as err:
            if err.status == 409 or (err.status == 403 and "NamespaceTerminating" in str(err.body)):
                return False
            refused = _refusal(err, "ConfigMap", config_map["metadata"]["namespace"])
            if refused is not None:
                raise refused from None
            raise

    def job_uid(self, namespace: str, name: str) -> str | None:
        try:
            body = _raw(self.batch.read_namespaced_job(name, namespace, _preload_content=False,
                                                       _request_timeout=self.timeout))
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return str(body["metadata"]["uid"])

    def set_config_map_owner(self, namespace: str, name: str, owner: dict[str, Any]) -> None:
        """Make `owner` the ConfigMap's only owner (a merge patch: repeating it changes nothing); 404 is fine."""
        try:
            _done(self.core.patch_namespaced_config_map(name, namespace, {"metadata": {"ownerReferences": [owner]}},
                                                        _preload_content=False, _request_timeout=self.timeout))
        except ApiException as err:
            if err.status != 404:
                raise

    def waiting_containers(self, namespace: str, job_name: str) -> list[tuple[str, str]]:
        """(reason, message) of each container of the Job's pods that waits to start, e.g. the kubelet's
        CreateContainerConfigError for a Secret or key its env names that is missing."""
        waiting = []
        for pod in self._job_pods(namespace, job_name):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                state = (status.get("state") or {}).get("waiting") or {}
                if state.get("reason"):
                    waiting.append((str(state["reason"]), str(state.get("message") or "")))
        return waiting
