"""The `kubemam` command: the operator, CRD generation, the workers, reports, and what people read:
`kubemam status` and `kubemam describe ma`. Other distributions add subcommands through the
`kubemam.commands` entry-point group: kubemam-local (operator/local) adds `local` and `demo`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubemam.steps.registry import STEPS

if TYPE_CHECKING:
    from kubemam.kubeapi import KubeApi

OUTPUTS = ("table", "json", "yaml")  # what the read commands print; views.py renders each
CHART_CRDS = Path("charts/kubemam/files/crds")  # the Helm chart ships the same files


def _crds(args: argparse.Namespace) -> int:
    from kubemam.api import crdgen

    outs = [Path(args.out)] + ([CHART_CRDS] if args.out == "crds" and CHART_CRDS.parent.is_dir() else [])
    if args.check:
        failed = 0
        for out in outs:
            stale = crdgen.stale(out)
            if stale:
                print(f"{out} differs from the models: {', '.join(stale)}; run `kubemam crds`", file=sys.stderr)
                failed = 1
            else:
                print(f"{out} matches the models")
        return failed
    for out in outs:
        for path in crdgen.write(out):
            print(path)
    return 0


def _run(args: argparse.Namespace) -> int:
    import kopf

    import kubemam.controllers.main  # noqa: F401 - registers the handlers
    from kubemam import metrics
    from kubemam.controllers import collector

    collector.pace()
    metrics.serve()
    # Kopf's own logging: text is its full format; json is one JSON object a line (python-json-logger), with
    # the object a message is about under "object" and a "severity", for log collectors.
    log_format = kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=args.verbose, log_format=log_format)
    settings = kopf.OperatorSettings()
    # --namespace: exact names, so Kopf needs no cluster-wide list/watch of namespaces and CRDs (the chart's
    # watchNamespaces grants none); it finds the kinds once at start by discovery. docs/security.md
    settings.scanning.disabled = bool(args.namespace)
    from kubemam.controllers import session

    session.scopes = len(args.namespace or ()) or 1  # each namespace has its own watch streams
    from kubemam.controllers import shutdown

    kopf.run(
        settings=settings,
        standalone=True,  # one replica, no peering: see docs/architecture.md
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        stop_flag=shutdown.STOP,  # set by SIGTERM/SIGINT even when asyncio misses them (controllers/shutdown.py)
    )
    # Kopf has stopped. The handler threads still in an API call (up to its timeout), and any handler calls
    # queued in Kopf's executor, would be joined by the interpreter's exit: behind a backlog of 2,000 assets
    # that took over 30 s, past a pod's grace period. Every handler is safe to cut short and run again.
    logging.shutdown()
    os._exit(0)


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


# --- what people read: status and describe -------------------------------------------------------------

WATCH_SECONDS = 2.0
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _kinds() -> dict[str, Any]:
    """Every name kubectl accepts for a kubemam kind: short name, singular, plural."""
    from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, RIGHTS_WINDOW, TRANSCODE_LADDER

    return {name: kind for kind in (MEDIA_ASSET, TRANSCODE_LADDER, RIGHTS_WINDOW, ARCHIVE_POLICY)
            for name in (kind.short_name, kind.singular, kind.plural, kind.kind.lower())}


def _kind_name(value: str) -> str:
    """A KIND argument, checked only when given: the kinds' models are not built for every command (a worker's
    start would pay 0.4 s for them)."""
    if value not in _kinds():
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(sorted(_kinds()))})")
    return value


def _people_client(kubeconfig: str | None = None, context: str | None = None) -> tuple[KubeApi, str]:
    """A client as kubectl would make one: --kubeconfig or KUBECONFIG (or ~/.kube/config), --context or the
    current context, and that context's namespace; else the pod's own credentials and namespace."""
    from kubernetes import client, config

    from kubemam.kubeapi import KubeApi

    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
        namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    except config.ConfigException:
        # Not in a pod, or a kubeconfig or context was named: the kubeconfig's error is the one to show.
        if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise
        config.load_incluster_config()
        api_client = client.ApiClient()
        namespace = _SA_NAMESPACE.read_text().strip() if _SA_NAMESPACE.exists() else "default"
    return KubeApi(api_client), namespace


def _list_kind(api: KubeApi, plural: str, namespace: str | None, selector: str | None = None
               ) -> list[dict[str, Any]]:
    """One kind's objects in a namespace, or in all of them (namespace None), optionally by label selector."""
    from kubemam.api.common import GROUP, VERSION

    extra: dict[str, Any] = {"_request_timeout": api.timeout}  # a hung API server ends the command, in words
    if selector:
        extra["label_selector"] = selector
    if namespace is not None:
        response = api.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                            _preload_content=False, **extra)
    else:
        response = api.custom.list_cluster_custom_object(GROUP, VERSION, plural, _preload_content=False, **extra)
    return list(json.loads(response.data).get("items") or [])


def _status_text(api: KubeApi, namespace: str | None, output: str = "table", selector: str | None = None) -> str:
    from kubernetes.client.exceptions import ApiException

    from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, RIGHTS_WINDOW
    from kubemam.status_view import render_status
    from kubemam.views import dump, status_document

    assets = _list_kind(api, MEDIA_ASSET.plural, namespace, selector)
    windows = _list_kind(api, RIGHTS_WINDOW.plural, namespace, selector)
    try:  # only for the archive column's minimum copies: not worth failing for
        policies = _list_kind(api, ARCHIVE_POLICY.plural, namespace)
    except ApiException:
        policies = []
    scope = f"namespace {namespace}" if namespace is not None else "all namespaces"
    if selector:
        scope += f", labels {selector}"
    now = datetime.now(UTC)
    if output != "table":
        return dump(status_document(assets, windows, policies, now, scope), output)
    return render_status(assets, windows, policies, now, scope, all_namespaces=namespace is None)


def _people(command: str, show: Callable[[], int]) -> int:
    """Run `show`; a cluster that cannot be reached or refuses is one clear line, not a traceback."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        return int(show())
    except ApiException as err:
        print(f"kubemam {command}: the API server answered {err.status} {err.reason}", file=sys.stderr)
    except ConfigException as err:
        print(f"kubemam {command}: no cluster to read: {err}", file=sys.stderr)
    except (HTTPError, OSError) as err:
        print(f"kubemam {command}: cannot reach the cluster: {err}", file=sys.stderr)
    return 1


def _status(args: argparse.Namespace) -> int:
    def show() -> int:
        api, current = _people_client(args.kubeconfig, args.context)
        namespace = None if args.all_namespaces else (args.namespace or current)
        if not args.watch:
            sys.stdout.write(_status_text(api, namespace, args.output, args.selector))
            return 0
        try:
            while True:
                text = _status_text(api, namespace, args.output, args.selector)
                # A table is redrawn in place, as `watch` does; documents follow one another, as kubectl -w.
                sys.stdout.write(("\x1b[H\x1b[2J" + text) if args.output == "table" else
                                 (text if args.output == "json" else "---\n" + text))
                sys.stdout.flush()
                time.sleep(WATCH_SECONDS)
        except KeyboardInterrupt:
            return 0

    return _people("status", show)


def _owned_jobs(api: KubeApi, body: dict[str, Any]) -> list[dict[str, Any]]:
    from kubemam.plan.jobs import asset_jobs_selector

    meta = body["metadata"]
    selector = asset_jobs_selector(meta["name"])
    return [j for j in api.list_jobs(meta["namespace"], selector)
            if any(o.get("uid") == meta.get("uid") for o in j["metadata"].get("ownerReferences") or [])]


def _describe(args: argparse.Namespace) -> int:
    def show() -> int:
        from kubemam.api.kinds import ARCHIVE_POLICY, MEDIA_ASSET, RIGHTS_WINDOW, TRANSCODE_LADDER
        from kubemam.status_view import render_asset
        from kubemam.views import describe_document, dump, job_summary, render_ladder, render_policy, render_window

        kind = _kinds()[args.kind]
        api, current = _people_client(args.kubeconfig, args.context)
        namespace = args.namespace or current
        body = api.get(kind.plural, namespace, args.name)
        if body is None:
            print(f"kubemam describe: {kind.singular} {args.name!r} not found in namespace {namespace}",
                  file=sys.stderr)
            return 1
        now = datetime.now(UTC)
        spec = body.get("spec") or {}
        related: dict[str, Any] = {}
        if kind is MEDIA_ASSET:
            jobs = _owned_jobs(api, body)
            policy_ref = (spec.get("archivePolicyRef") or {}).get("name")
            policy = api.get(ARCHIVE_POLICY.plural, namespace, policy_ref) if policy_ref else None
            related = {"jobs": [job_summary(j) for j in jobs]}
            text = render_asset(body, now, jobs, policy)
        elif kind is RIGHTS_WINDOW:
            text = render_window(body, now)
        else:
            field = "ladderRef" if kind is TRANSCODE_LADDER else "archivePolicyRef"
            assets = [a for a in api.list_objects(MEDIA_ASSET.plural, namespace)
                      if ((a.get("spec") or {}).get(field) or {}).get("name") == args.name]
            related = {"assets": sorted(a["metadata"]["name"] for a in assets)}
            text = (render_ladder(body, related["assets"], now) if kind is TRANSCODE_LADDER
                    else render_policy(body, assets, now))
        sys.stdout.write(text if args.output == "table" else dump(describe_document(body, related), args.output))
        return 0

    return _people("describe", show)


def _preview(args: argparse.Namespace) -> int:
    def show() -> int:
        from kubemam.preview.command import s3_client, serve
        from kubemam.preview.model import PreviewError
        from kubemam.preview.player import find_player, search_roots

        try:
            player = find_player(args.player_js, os.environ, search_roots())
        except FileNotFoundError as err:
            print(f"kubemam preview: {err}", file=sys.stderr)
            return 2
        api, current = _people_client(args.kubeconfig, args.context)
        namespace = args.namespace or current
        try:
            s3 = s3_client(api, namespace, args.s3_endpoint, args.s3_secret)
            return serve(api, s3, namespace, args.name, args.port, player, not args.no_open, args.expires)
        except (PreviewError, ValueError) as err:
            print(f"kubemam preview: {err}", file=sys.stderr)
            return 1

    return _people("preview", show)


# --- subcommands of other distributions ----------------------------------------------------------------

# Other distributions add subcommands through this entry-point group: each entry point, named after its
# subcommand, is a function that adds its parser to the subparsers and sets `func` (kubemam-local adds
# `local` and `demo`). The product never imports them.
COMMAND_GROUP = "kubemam.commands"
# The development cluster's subcommands, named even when kubemam-local is not installed, to say so.
DEV_COMMANDS = {
    "local": "the local cluster for tests and the demo (needs kubemam-local)",
    "demo": "start the local cluster, apply examples/ and follow the asset to Ready (needs kubemam-local)",
}
DEV_DISTRIBUTION = ("the development cluster is a separate distribution, kubemam-local, and it is not installed. "
                    "From a kubemam checkout: pip install -e operator/local (`make up` and `make demo` install it).")


def _not_installed(args: argparse.Namespace) -> int:
    print(f"kubemam {args.command}: {getattr(args, 'broken', None) or DEV_DISTRIBUTION}", file=sys.stderr)
    return 2


def _add_plugins(sub: argparse._SubParsersAction[Any]) -> None:
    """The subcommands other installed distributions register; a name a built-in command has is skipped.
    The development cluster's commands that nobody registered get a parser that says how to install it."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        if entry.name in sub.choices:
            continue
        try:
            entry.load()(sub)
        except Exception as err:  # a broken plugin costs its own subcommand, not the whole CLI (nor a worker)
            broken = f"{entry.value} (from {entry.dist.name if entry.dist else '?'}) failed to load: {err}"
            stub = sub.choices.get(entry.name) or sub.add_parser(entry.name, help=f"unavailable: {broken}",
                                                                 add_help=False)
            stub.set_defaults(func=_not_installed, broken=broken)
    for name, help_text in DEV_COMMANDS.items():
        if name not in sub.choices:
            stub = sub.add_parser(name, help=help_text, add_help=False)
            stub.set_defaults(func=_not_installed)


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
    run.add_argument("--log-format", choices=["text", "json"], default="text",
                     help="text (default) or json: one JSON object a line, Kopf's JSON logging")
    run.set_defaults(func=_run)

    worker = sub.add_parser("worker", help="run one step of a Job (reads KUBEMAM_STEP_INPUT)")
    # Not argparse choices: an unknown step must reach the asset in words, as a termination message.
    worker.add_argument("step", metavar="STEP", help="one of: " + ", ".join(STEPS))
    worker.set_defaults(func=_worker)

    report = sub.add_parser("report", help="reports from what the workers recorded in the library")
    reports = report.add_subparsers(dest="report", required=True)
    usage = reports.add_parser("usage", help="availability per asset, territory and channel in a time range "
                                             "(S3 from the AWS_* environment)")
    usage.add_argument("--from", dest="start", type=_time, required=True, help="ISO 8601 start (inclusive; UTC "
                       "without a zone)")
    usage.add_argument("--to", dest="end", type=_time, required=True, help="ISO 8601 end (exclusive)")
    usage.add_argument("--output", "-o", "--format", dest="format", choices=["csv", "json"], default="csv",
                       help="csv (default) or json")
    usage.add_argument("--library", default=os.environ.get("KUBEMAM_LIBRARY_URI") or "s3://kubemam-library",
                       help="the library holding usage/ (default: KUBEMAM_LIBRARY_URI or s3://kubemam-library)")
    usage.add_argument("--namespace", "-n", default=None, help="only this namespace's usage")
    usage.set_defaults(func=_report)

    people = argparse.ArgumentParser(add_help=False)  # what kubectl users expect on commands that read the cluster
    people.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    people.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    people.add_argument("--output", "-o", choices=OUTPUTS, default="table", help="table (default), json or yaml")

    status = sub.add_parser("status", parents=[people], help="assets with their progress, archive and distribution; "
                            "windows with their next transition")
    where = status.add_mutually_exclusive_group()
    where.add_argument("--namespace", "-n", default=None, help="this namespace (default: the context's)")
    where.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    status.add_argument("--selector", "-l", default=None,
                        help="label selector for assets and windows, e.g. series=coastal")
    status.add_argument("--watch", "-w", action="store_true", help=f"redraw every {WATCH_SECONDS:g} s until Ctrl-C")
    status.set_defaults(func=_status)

    describe = sub.add_parser("describe", parents=[people], help="one object: an asset's lineage (source, renditions, "
                              "packages, copies, distribution) and Jobs; a ladder, window or policy and what it covers")
    describe.add_argument("kind", type=_kind_name, metavar="KIND", help="ma|tl|rw|ap (or the full names)")
    describe.add_argument("name")
    describe.add_argument("--namespace", "-n", default=None, help="default: the context's namespace")
    describe.set_defaults(func=_describe)

    preview = sub.add_parser("preview", help="a local page (127.0.0.1) to watch an asset's proxy, renditions and "
                             "packages, its QC findings on a timeline, its loudness and thumbnails")
    preview.add_argument("kind", choices=["ma", "mediaasset", "mediaassets"], metavar="KIND", help="ma")
    preview.add_argument("name")
    preview.add_argument("--namespace", "-n", default=None, help="default: the context's namespace")
    preview.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    preview.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    preview.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    preview.add_argument("--no-open", action="store_true", help="print the URL only; do not open a browser")
    preview.add_argument("--player-js", default=None, help="Shaka Player script: a path, `cdn` or `none` (default: "
                         "KUBEMAM_PLAYER_JS, an npm copy nearby, else jsDelivr)")
    preview.add_argument("--s3-endpoint", default=None, help="default: AWS_ENDPOINT_URL or KUBEMAM_S3_ENDPOINT")
    preview.add_argument("--s3-secret", default=None, help="Secret in the namespace with AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY (default: KUBEMAM_S3_CREDENTIALS_SECRET, else the AWS_* environment)")
    preview.add_argument("--expires", type=int, default=3600, help="lifetime of presigned URLs, s (default 3600)")
    preview.set_defaults(func=_preview)

    _add_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.func is not _not_installed:  # after `kubemam local` anything gets the same answer
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.func is not _run:  # Kopf configures logging for the operator itself
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))
