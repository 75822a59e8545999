"""API-server faults (issue 15, item 1): a hung Kubernetes API call must not stop takedowns.

The operator runs on a local cluster of its own (tests/helpers.py local_stack) with a kubeconfig whose
server is a proxy in front of the real API server; the test's own client, the process node and the
step pods talk to the API server directly. Each scenario publishes a small committed package (as
bench/takedown.py does: the asset names a file:// source the operator does not fetch, so no ingest
competes), lets a RightsWindow close during the fault and measures, by listing the origin, when the
package is gone.

- blackhole: every connection (open and new) through the proxy is held, answered by nothing. The
  operator's calls time out (KUBEMAM_API_*_TIMEOUT_SECONDS shrunk to 2 s / 5 s here) instead of hanging,
  it stays up and healthy, and once the proxy passes again the window that closed during the blackhole
  is taken down within 60 s.
- one namespace hung: one API server serves every namespace, so a TCP blackhole cannot spare any of
  them. NamespaceHangProxy terminates TLS (with the API server's own serving certificate, so the
  kubeconfig's CA still verifies) and reads each HTTP request's head: while it names a namespace, every
  request for a path in it is accepted and held — never forwarded, never answered — and everything else
  passes. That is what a hung call looks like from the operator (a connection accepted and never
  answered; in production a dead path under one in-flight request, a stuck admission webhook or an
  overloaded etcd range for one namespace). Namespace A's rights reconcile hangs in its first call,
  with a read timeout (60 s) longer than the hang, so one run is blocked throughout; meanwhile
  namespace B's window closes and must be taken down within the takedown goal (5 s after its end),
  /healthz must fail once A's run is past KUBEMAM_STUCK_SECONDS, and after the hang is released A's
  window (which closed during the hang) is taken down and /healthz is healthy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from kubemam.api.common import GROUP, VERSION
from tests.faults.proxy import FaultProxy, Mode
from tests.faults.standin import commit_package, packaged_asset
from tests.helpers import LocalStack, local_stack, wait_for

TAKEDOWN_GOAL = 5.0  # seconds after a window's end (docs/architecture.md "Rights enforcement")
RECOVERY_GOAL = 60.0  # seconds after a fault ends (issue 15)

# --- a proxy that hangs one namespace's calls ----------------------------------------------------------


class NamespaceHangProxy(FaultProxy):
    """TLS-terminating proxy in front of the API server that holds every request for a path in
    `namespace` (while it is set) and passes everything else byte for byte. See the module docstring."""

    def __init__(self, control_plane: Any) -> None:
        super().__init__(control_plane.api_port)
        self.namespace: str | None = None
        self.held: list[tuple[float, str]] = []  # (when, request line) of every request held
        self.server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_tls.load_cert_chain(str(control_plane.pki.serving_cert), str(control_plane.pki.serving_key))
        self.upstream_tls = ssl.create_default_context(cafile=str(control_plane.pki.ca_cert))

    def hang(self, namespace: str | None) -> None:
        """Hold every request for `namespace` from now on; None forwards what was held and passes again."""
        self.namespace = namespace

    def _hangs(self, path: str) -> bool:
        return self.namespace is not None and f"/namespaces/{self.namespace}/" in path

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._requests(reader, writer)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP/1.1 request at a time (the clients here send Content-Length bodies, never chunked)."""
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                fields = {k.strip().lower(): v.strip() for k, _, v in
                          (h.decode("latin-1").partition(":") for h in head.split(b"\r\n")[1:] if h)}
                body = await reader.readexactly(int(fields.get("content-length") or 0))
                path = line.split(" ")[1] if " " in line else ""
                if self._hangs(path):
                    self.held.append((time.time(), line))
                    while self._hangs(path):  # accepted, read, never answered
                        await asyncio.sleep(0.1)
                writer.write(head + body)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()


# --- setup: a published package and a window over it ----------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _publishable(stack: LocalStack, namespace: str, origin: str) -> None:
    """Targets, a committed package and an asset whose status names it (standing in for a package step)."""
    from kubemam_local.cluster import provision_namespaces

    provision_namespaces(stack.api, stack.s3.access_key, stack.s3.secret_key, (namespace,))
    stack.store.create_bucket(Bucket=origin)
    targets = [{"name": "svod-no", "channel": "svod", "origin": f"s3://{origin}/svod", "territories": ["NO"]}]
    client.CoreV1Api(stack.api).create_namespaced_config_map(namespace, {
        "metadata": {"name": "kubemam-distribution"}, "data": {"targets.yaml": yaml.safe_dump(targets)}})
    packaged_asset(stack, namespace, "title", commit_package(stack, namespace))
    custom = client.CustomObjectsApi(stack.api)
    now = datetime.now(UTC).replace(microsecond=0)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rightswindows", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RightsWindow", "metadata": {"name": "licence"},
        "spec": {"assets": {"names": ["title"]}, "territories": ["NO"], "channels": ["svod"],
                 "start": _stamp(now - timedelta(minutes=1)), "end": _stamp(now + timedelta(hours=1))}})


def _published(stack: LocalStack, namespace: str, origin: str) -> list[str]:
    listed = stack.store.list_objects_v2(Bucket=origin, Prefix=f"svod/{namespace}/title/")
    return [o["Key"] for o in listed.get("Contents") or []]


def _end_window(stack: LocalStack, namespace: str, end: datetime) -> None:
    client.CustomObjectsApi(stack.api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "rightswindows", "licence", {"spec": {"end": _stamp(end)}})


def _wait_published(stack: LocalStack, namespace: str, origin: str) -> None:
    try:
        wait_for(lambda: "manifest.mpd" in {k.rsplit("/", 1)[-1] for k in _published(stack, namespace, origin)},
                 timeout=90, what=f"the package published in {namespace}")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{stack.log.read_text()[-4000:]}") from None


def _next_second(after: float) -> datetime:
    """The first whole second at least `after` seconds from now (window ends are whole seconds)."""
    return (datetime.now(UTC) + timedelta(seconds=after + 1)).replace(microsecond=0)


# --- scenarios ------------------------------------------------------------------------------------------


def test_blackholed_api_server_calls_time_out_and_the_takedown_follows_when_it_passes(
        control_plane: Any, tmp_path: Path) -> None:
    namespace, origin = "fault-blackhole", "origin-blackhole"
    # Unarmed (lead 0): an armed takedown's pod, made before the blackhole, would take the title down on its own
    # at the end; this scenario is about the operator's calls timing out and its takedown following the blackhole.
    env = {"KUBEMAM_API_CONNECT_TIMEOUT_SECONDS": "2", "KUBEMAM_API_READ_TIMEOUT_SECONDS": "5",
           "KUBEMAM_TAKEDOWN_LEAD_SECONDS": "0"}
    began = time.monotonic()
    with local_stack(control_plane, tmp_path, namespace, operator_env=env, liveness=True,
                     api_proxy=lambda cp: FaultProxy(cp.api_port)) as stack:
        proxy: FaultProxy = stack.api_proxy
        _publishable(stack, namespace, origin)
        _wait_published(stack, namespace, origin)
        assert proxy.connections > 0  # the operator really talks through the proxy
        end = _next_second(4)
        _end_window(stack, namespace, end)
        time.sleep(1.0)  # let the edit's reconcile aim the clock at the end, then cut the API server off

        proxy.set(Mode.BLACKHOLE)
        blackholed = time.time()
        health: list[int] = []
        while time.time() < blackholed + 30:  # the window ends 3 s into a 30 s blackhole
            health.append(stack.healthz()[0])
            assert stack.operator is not None and stack.operator.poll() is None, "the operator exited"
            time.sleep(2.0)
        assert _published(stack, namespace, origin), "taken down without the API server?"
        proxy.set(Mode.PASS)
        passed = time.time()

        wait_for(lambda: not _published(stack, namespace, origin), timeout=RECOVERY_GOAL + 30,
                 what="the takedown after the blackhole")
        recovered = time.time() - passed
        log = stack.log.read_text()
        print(f"\nblackhole {passed - blackholed:.0f} s (window ended {end.timestamp() - blackholed:.1f} s in); "
              f"taken down {recovered:.1f} s after it ended; healthz during it: {health}; "
              f"scenario {time.monotonic() - began:.0f} s")
        assert recovered <= RECOVERY_GOAL, log[-4000:]
        # The calls failed by their timeouts (and were retried), not by anything else.
        assert f"rights reconcile of {namespace} failed" in log and "timed out" in log.lower(), log[-4000:]
        # Every call ends by its timeout, so nothing is stuck: a blackholed API server is no reason to
        # restart the operator (a restart would not reach it either).
        assert health and all(code == 200 for code in health), health
        history = wait_for(lambda: (s := stack.custom.get("rightswindows", "licence").get("status") or {})
                           and [h["action"] for h in s.get("history") or []] == ["Published", "TakenDown"] and s,
                           what="the takedown in the window's history")
        assert history


def test_a_namespace_whose_calls_hang_does_not_delay_another_namespaces_takedown(
        control_plane: Any, tmp_path: Path) -> None:
    hung, other = "fault-hung", "fault-other"
    env = {"KUBEMAM_API_READ_TIMEOUT_SECONDS": "60", "KUBEMAM_STUCK_SECONDS": "8"}
    began = time.monotonic()
    with local_stack(control_plane, tmp_path, hung, operator_env=env, liveness=True,
                     api_proxy=NamespaceHangProxy) as stack:
        proxy: NamespaceHangProxy = stack.api_proxy
        for namespace in (hung, other):
            _publishable(stack, namespace, f"origin-{namespace}")
        for namespace in (hung, other):
            _wait_published(stack, namespace, f"origin-{namespace}")
        wait_for(lambda: stack.healthz()[0] == 200, timeout=30, what="/healthz healthy before the fault")

        other_end = _next_second(12)
        _end_window(stack, other, other_end)
        time.sleep(1.0)
        proxy.hang(hung)
        hung_at = time.time()
        # The edit pokes the hung namespace's reconcile: its first call is held, and so is the run.
        hung_end = _next_second(3)
        _end_window(stack, hung, hung_end)
        wait_for(lambda: any(f"/namespaces/{hung}/rightswindows" in line for _, line in proxy.held), timeout=10,
                 what="the hung namespace's reconcile to make its first call")

        wait_for(lambda: not _published(stack, other, f"origin-{other}"), timeout=40,
                 what="the other namespace's takedown")
        other_late = time.time() - other_end.timestamp()
        assert proxy.namespace == hung and _published(stack, hung, f"origin-{hung}"), \
            "the hung namespace was not hung while the other one's window closed"
        unhealthy = wait_for(lambda: (h := stack.healthz())[0] == 500 and h, timeout=30,
                             what="/healthz failing for the stuck rights reconcile")
        unhealthy_after = time.time() - hung_at
        assert unhealthy

        proxy.hang(None)
        released = time.time()
        wait_for(lambda: not _published(stack, hung, f"origin-{hung}"), timeout=RECOVERY_GOAL + 30,
                 what="the hung namespace's takedown after the release")
        recovered = time.time() - released
        healthy = wait_for(lambda: stack.healthz()[0] == 200, timeout=30, what="/healthz healthy again")
        healthy_after = time.time() - released
        log = stack.log.read_text()
        print(f"\nhung {released - hung_at:.0f} s; other namespace taken down {other_late:.1f} s after its end "
              f"(goal {TAKEDOWN_GOAL:.0f} s); /healthz 500 {unhealthy_after:.1f} s into the hang, 200 again "
              f"{healthy_after:.1f} s after the release; hung namespace taken down {recovered:.1f} s after the "
              f"release ({released - hung_end.timestamp():.1f} s after its end); held {len(proxy.held)} requests; "
              f"scenario {time.monotonic() - began:.0f} s")
        assert other_late <= TAKEDOWN_GOAL, log[-4000:]
        assert recovered <= RECOVERY_GOAL, log[-4000:]
        assert healthy
        # Kopf logs why the probe failed: the hung namespace's rights reconcile, past its limit.
        assert f"stuck: rights reconcile {hung}" in log, log[-4000:]
        assert json.loads(stack.healthz()[1]).get("heartbeats") is not None
