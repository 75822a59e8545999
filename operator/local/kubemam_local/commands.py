"""`kubemam local …` and `kubemam demo`: the subcommands this distribution adds to the `kubemam` CLI.

The CLI finds them through the `kubemam.commands` entry-point group (operator/local/pyproject.toml);
each entry point is a function that adds its parser to the CLI's subparsers and sets `func`. This
module is imported on every `kubemam` run while kubemam-local is installed, so it imports only the
standard library at the top; the cluster's modules load when a subcommand runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

LOCAL_ACTIONS = ("up", "down", "env", "build", "serve", "node", "logs", "pin-kube", "images", "docker-down")
NODES = ("process", "kubelet")


def add_local(sub: argparse._SubParsersAction[Any]) -> None:
    local = sub.add_parser("local", help="the local cluster for tests and the demo (kubemam-local)")
    local.add_argument("action", choices=LOCAL_ACTIONS)
    local.add_argument("target", nargs="?", metavar="POD|VERSION",
                       help="logs: the pod whose stdout/stderr to show; pin-kube: the release, e.g. v1.36.3")
    local.add_argument("--state-dir", default=None,
                       help="where state and logs live (default: KUBEMAM_STATE_DIR or ~/.cache/kubemam/local)")
    local.add_argument("--node", choices=NODES, default=None,
                       help="up/serve: the node that runs pods: `process` (default: pods as local processes) or "
                            "`kubelet` (a real kubelet with containerd, running the built images; as root)")
    local.add_argument("--tag", default=None, help="images: the tag (default: the version in pyproject.toml)")
    local.add_argument("--rebuild-base", action="store_true",
                       help="images: make the local Debian base again with mmdebstrap (fresh packages)")
    local.set_defaults(func=_local)


def add_demo(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser("demo", help="start the local cluster, apply examples/ and follow the asset to Ready "
                                       "(kubemam-local)")
    demo.add_argument("--watch", type=float, default=900.0,
                      help="longest wait for the asset to reach Ready, in seconds (default: 900)")
    demo.add_argument("--examples", type=Path, default=None,
                      help="the manifests to apply (default: the repository's examples/)")
    demo.add_argument("--state-dir", default=None,
                      help="the local cluster's state (default: KUBEMAM_STATE_DIR or ~/.cache/kubemam/local)")
    demo.add_argument("--master-size", type=_size, default=(1920, 1080), metavar="WxH",
                      help="the generated master's picture size (default: 1920x1080)")
    demo.add_argument("--master-seconds", type=int, default=30, metavar="N",
                      help="the generated master's duration, at least 8 (default: 30)")
    demo.add_argument("--node", choices=NODES, default="process",
                      help="the node: `process` (default) or `kubelet` (the built images on a real kubelet; root, "
                           "`make images` first)")
    demo.set_defaults(func=_demo)


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()) or int(width) % 2 or int(height) % 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT with even numbers, e.g. 640x360")
    return int(width), int(height)


def _node(directory: Path) -> int:
    """Run the process node in the foreground until SIGTERM or SIGINT (KUBECONFIG names the cluster)."""
    import signal
    import threading

    from kubernetes import client

    from kubemam.kubeapi import load_config
    from kubemam_local.node import ProcessNode

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
    from kubemam_local.node import CONTAINER_LOG

    sandboxes = sorted((directory / "node" / "pods").glob(f"*_{pod}_*/{CONTAINER_LOG}"))
    if not sandboxes:
        print(f"no pod {pod!r} has run on the process node (state: {directory})", file=sys.stderr)
        return 1
    sys.stdout.write(sandboxes[-1].read_text(errors="replace"))
    return 0


def _local(args: argparse.Namespace) -> int:
    from kubemam_local import cluster
    from kubemam_local.binaries import resolve

    directory = Path(args.state_dir) if args.state_dir else cluster.state_dir()
    if args.action == "serve":
        return cluster.serve(directory, node=args.node or "process")
    if args.action == "node":
        return _node(directory)
    if args.action == "logs":
        return _logs(directory, args.target)
    if args.action == "pin-kube":
        from kubemam_local.pinning import pin

        if not args.target:
            print("usage: kubemam local pin-kube VERSION (e.g. v1.36.3)", file=sys.stderr)
            return 2
        for module in pin(args.target):
            print(f"pinned {module}")
        return 0
    if args.action == "build":
        from kubemam_local.gotools import NODE_RUNTIME, TOOLS, resolve_tool

        binaries = resolve(cluster.TOOLS)  # the control plane with the scheduler, and kubectl
        for name, path in sorted(binaries.paths.items()):
            print(f"{name}\t{path}")
        # What `make test` needs; the real node's runtime (containerd, runc: cgo and libseccomp) is built by
        # `kubemam local up --node kubelet` and `make images`/`make test-containers`, not by every test run.
        for tool in TOOLS:
            if tool not in NODE_RUNTIME:
                print(f"{tool}\t{resolve_tool(tool)}")
        return 0
    if args.action == "images":
        return _images(args)
    if args.action == "docker-down":
        from kubemam_local.docker import stop_dockerd

        print("stopped dockerd" if stop_dockerd() else "no dockerd started by kubemam is running")
        return 0
    if args.action == "up":
        state = cluster.up(directory, node=args.node or "process")
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


def _images(args: argparse.Namespace) -> int:
    """Build ghcr.io/kubemam/{operator,worker}:<version> here, with local Debian bases (no registry)."""
    import logging
    import time

    from kubemam_local import docker, images

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    engine = docker.ensure()
    print(f"docker engine: {engine.host}", flush=True)
    refs, report = images.build_images(engine, tag=args.tag, rebuild_base=args.rebuild_base, progress=True)
    for line in report.lines():
        print(line)
    print(f"images built in {time.monotonic() - started:.0f}s: {' '.join(refs.values())}")
    print(f"to use this engine: export DOCKER_HOST={engine.host}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kubemam_local import demo

    if args.master_seconds < 8:
        print("kubemam demo: --master-seconds must be at least 8 (black, freeze and loud passages)", file=sys.stderr)
        return 2
    width, height = args.master_size
    return demo.run(examples=args.examples or demo.EXAMPLES, watch_seconds=args.watch,
                    state_dir=Path(args.state_dir) if args.state_dir else None,
                    sample={"width": width, "height": height, "seconds": args.master_seconds}, node=args.node)
