"""Every KubeApi call times out against a server that accepts connections and never answers (the hung
call of issue 15), instead of blocking its thread for ever; and it fails once, not after urllib3's
retries. A public method missing from the table below fails the test: add it with its arguments."""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from urllib3.exceptions import TimeoutError as CallTimeout

from kubemam.kubeapi import KubeApi, new_api_client

NS = "media"
JOB = {"metadata": {"name": "j", "namespace": NS}}
CALLS: dict[str, tuple[Any, ...]] = {
    "get": ("mediaassets", NS, "a"),
    "list_objects": ("mediaassets", NS),
    "patch_status": ("mediaassets", NS, "a", {"phase": "Ready"}),
    "patch_status_version": ("mediaassets", NS, "a", {"phase": "Ready"}),
    "add_finalizer": ("mediaassets", NS, "a", [], "kubemam.io/finalizer", "1"),
    "list_jobs": (NS, {"kubemam.io/asset": "a"}),
    "create_job": (JOB,),
    "config_map_data": (NS, "kubemam-distribution"),
    "delete_job": (NS, "j"),
    "annotate_job": (NS, "j", {"kubemam.io/applied": "true"}),
    "create_event": ({"metadata": {"name": "e", "namespace": NS}},),
    "create_secret": ({"metadata": {"name": "s", "namespace": NS}},),
    "running_pod_log_tail": (NS, "j"),
    "termination_message": (NS, "j"),
    "secret_metadata": (NS, "s"),
    "read_secret": (NS, "s"),
    "waiting_containers": (NS, "j"),
    "create_config_map": ({"metadata": {"name": "j-staged", "namespace": NS}},),
    "job_uid": (NS, "j"),
    "set_config_map_owner": (NS, "j-staged", {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}),
}
READ_TIMEOUT = 0.5


@pytest.fixture()
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts every connection, reads the request, answers nothing."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()
    for conn in accepted:
        conn.close()


def _public_methods() -> set[str]:
    return {name for name, _ in inspect.getmembers(KubeApi, inspect.isfunction) if not name.startswith("_")}


def test_every_public_method_is_covered() -> None:
    assert _public_methods() == set(CALLS), "a KubeApi method is missing from CALLS (or CALLS names one gone)"


@pytest.mark.parametrize("method", sorted(CALLS))
def test_a_call_that_is_never_answered_times_out_once(method: str,
                                                      silent_server: tuple[str, list[socket.socket]]) -> None:
    url, accepted = silent_server
    api = KubeApi(new_api_client(client.Configuration(host=url)), timeout=(1.0, READ_TIMEOUT))
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        getattr(api, method)(*CALLS[method])
    elapsed = time.monotonic() - started
    assert READ_TIMEOUT * 0.9 <= elapsed < READ_TIMEOUT * 3, f"{method} took {elapsed:.2f} s"
    assert len(accepted) == 1, "a timed-out call was retried inside the client: its caller's backoff decides"
