"""The `kubemam` command: the operator, CRD generation, the local cluster, the workers and reports."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from kubemam.worker.steps import STEPS


def _crds(args: argparse.Namespace) -> int:
    from kubemam.api import crdgen

    out = Path(args.out)
    if args.check:
        stale = crdgen.stale(out)
        if stale:
            print(f"{out} differs from the models: {', '.join(stale)}; run `kubemam crds`", file=sys.stderr)
            return 1
        print(f"{out} matches the models")
        return 0
    for path in crdgen.write(out):
        print(path)
    return 0


def _run(args: argparse.Namespace) -> int:
    import kopf

    import kubemam.controllers.main  # noqa: F401 - registers the handlers
    from kubemam import metrics

    metrics.serve()
    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,  # one replica, no peering: see docs/architecture.md
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
    )
    return 0


def _node(directory: Path) -> int:
    """Run the process node in the foreground until SIGTERM or SIGINT (KUBECONFIG names the cluster)."""
    import signal
    import threading

    from kubernetes import client

    from kubemam.kubeapi import load_config
    from kubemam.local.node import ProcessNode

    load_config()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    taint = os.environ.get("KUBEMAM_NODE_TAINT")  # key=value:Effect
    taints = []
    if taint:
        key_value, effect = taint.rsplit(":", 1)
        key, _, value = key_value.partition("=")
        taints.append({"key": key, "value": value, "effect": effect})
    name = os.environ.get("KUBEMAM_NODE_NAME", "kubemam-local")
    node = ProcessNode(client.ApiClient(), directory / "node", name=name, taints=taints)
    node.start()
    stop.wait()
    node.stop()
    return 0


def _logs(directory: Path, pod: str | None) -> int:
    """A finished or running pod's stdout and stderr, kept by the process node in its sandbox."""
    if not pod:
        print("usage: kubemam local logs POD", file=sys.stderr)
        return 2
    from kubemam.local.node import CONTAINER_LOG

    sandboxes = sorted((directory / "node" / "pods").glob(f"*_{pod}_*/{CONTAINER_LOG}"))
    if not sandboxes:
        print(f"no pod {pod!r} has run on the process node (state: {directory})", file=sys.stderr)
        return 1
    sys.stdout.write(sandboxes[-1].read_text(errors="replace"))
    return 0


def _local(args: argparse.Namespace) -> int:
    from kubemam.local import cluster
    from kubemam.local.binaries import resolve

    directory = Path(args.state_dir) if args.state_dir else cluster.state_dir()
    if args.action == "serve":
        return cluster.serve(directory)
    if args.action == "node":
        return _node(directory)
    if args.action == "logs":
        return _logs(directory, args.target)
    if args.action == "pin-kube":
        from kubemam.local.pinning import pin

        if not args.target:
            print("usage: kubemam local pin-kube VERSION (e.g. v1.36.3)", file=sys.stderr)
            return 2
        for module in pin(args.target):
            print(f"pinned {module}")
        return 0
    if args.action == "build":
        from kubemam.local.gotools import TOOLS, resolve_tool

        binaries = resolve(cluster.TOOLS + ("kube-scheduler",))
        for name, path in sorted(binaries.paths.items()):
            print(f"{name}\t{path}")
        for tool in TOOLS:
            print(f"{tool}\t{resolve_tool(tool)}")
        return 0
    if args.action == "up":
        state = cluster.up(directory)
        print(f"kubemam local cluster {state['version']} at {state['server']} "
              f"(control plane started in {state['startedInSeconds']}s)")
        print(f"logs: {state['logs']}")
        print("to use it:")
        for line in cluster.env_lines(state):
            print(f"  {line}")
        return 0
    if args.action == "down":
        print("stopped" if cluster.down(directory) else "not running")
        return 0
    running = cluster.read_state(directory)
    if running is None:
        print("the local cluster is not running: kubemam local up", file=sys.stderr)
        return 1
    for line in cluster.env_lines(running):
        print(line)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from kubemam.worker.steps import main as run_step

    return run_step(args.step)


def _time(text: str) -> datetime:
    from kubemam.report import parse_time

    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from err


def _report(args: argparse.Namespace) -> int:
    from kubemam.report import usage_report

    if args.start >= args.end:
        print("kubemam report usage: --from must be before --to", file=sys.stderr)
        return 2
    try:
        text = usage_report(args.start, args.end, args.format, args.library, args.namespace)
    except ValueError as err:  # a bad --library or a usage object that is not one
        print(f"kubemam report usage: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kubemam import demo

    return demo.run(watch_seconds=args.watch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubemam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="generate the CRDs from the API models")
    crds.add_argument("--out", default="crds", help="directory to write (default: crds)")
    crds.add_argument("--check", action="store_true", help="fail when the directory differs from the models")
    crds.set_defaults(func=_crds)

    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (default)")
    run.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--verbose", action="store_true")
    run.set_defaults(func=_run)

    local = sub.add_parser("local", help="the local cluster for tests and the demo")
    local.add_argument("action", choices=["up", "down", "env", "build", "serve", "node", "logs", "pin-kube"])
    local.add_argument("target", nargs="?", metavar="POD|VERSION",
                       help="logs: the pod whose stdout/stderr to show; pin-kube: the release, e.g. v1.36.3")
    local.add_argument("--state-dir", default=None, help="where state and logs live (default: ~/.cache/kubemam/local)")
    local.set_defaults(func=_local)

    worker = sub.add_parser("worker", help="run one step of a Job (reads KUBEMAM_STEP_INPUT)")
    worker.add_argument("step", choices=list(STEPS))
    worker.set_defaults(func=_worker)

    report = sub.add_parser("report", help="reports from what the workers recorded in the library")
    reports = report.add_subparsers(dest="report", required=True)
    usage = reports.add_parser("usage", help="availability per asset, territory and channel in a time range "
                                             "(S3 from the AWS_* environment)")
    usage.add_argument("--from", dest="start", type=_time, required=True, help="ISO 8601 start (inclusive; UTC "
                       "without a zone)")
    usage.add_argument("--to", dest="end", type=_time, required=True, help="ISO 8601 end (exclusive)")
    usage.add_argument("--format", choices=["csv", "json"], default="csv", help="default: csv")
    usage.add_argument("--library", default=os.environ.get("KUBEMAM_LIBRARY_URI") or "s3://kubemam-library",
                       help="the library holding usage/ (default: KUBEMAM_LIBRARY_URI or s3://kubemam-library)")
    usage.add_argument("--namespace", "-n", default=None, help="only this namespace's usage")
    usage.set_defaults(func=_report)

    demo = sub.add_parser("demo", help="start the local cluster, apply examples/ and show what happens")
    demo.add_argument("--watch", type=float, default=900.0,
                      help="longest wait for ingest and transcode, in seconds (default: 900)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.func is not _run:  # Kopf configures logging for the operator itself
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))
