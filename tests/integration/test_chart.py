"""The Helm chart (charts/kubemam): lint, render, snapshots, refusals by values.schema.json, a
server-side dry-run apply to the real API server, Pod Security "restricted" judged by the real
admission plugin, and the operator running under exactly the chart's RBAC.

Snapshots are tests/golden/chart/<value set>.yaml, and NOTES-<value set>.txt for the install notes;
after an intended change, regenerate them with
KUBEMAM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/integration/test_chart.py -k "golden or notes"
and review the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemam import __version__
from kubemam import config as operator_config
from tests.helpers import (
    Custom,
    chart_operator,
    deployment_env,
    example,
    exists,
    wait_for,
    wait_key_secret_policies_gone,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubemam"
GOLDEN = REPO / "tests" / "golden" / "chart"
UPDATE_GOLDEN = os.environ.get("KUBEMAM_UPDATE_GOLDEN") == "1"
RELEASE = "kubemam"
NAMESPACE = "kubemam-system"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Every optional object on, every setting the operator reads set.
    "everything": {
        "workerServiceAccount": {"name": "kubemam-worker", "namespaces": ["media-a", "media-b"],
                                 "annotations": {"iam.example.com/role": "kubemam-worker"}},
        "s3": {"endpoint": "https://minio.storage.svc:9000", "credentialsSecret": "kubemam-s3", "retrySeconds": 120},
        "library": {"uri": "s3://media-library/kubemam"},
        "jobs": {"backoffLimit": 5, "activeDeadlineSeconds": 7200, "retrySeconds": 15, "retryMaxSeconds": 900},
        "recheckSeconds": 30,
        "archiveCheckSeconds": 600,
        "kubeApi": {"connectTimeoutSeconds": 3, "readTimeoutSeconds": 20},
        "rights": {"workers": 8, "retryMaxSeconds": 20},
        "distribution": {"retryMaxSeconds": 120},
        "liveness": {"stuckSeconds": 240},
        "logFormat": "json",  # the RBAC test runs the operator with it and reads its log as JSON
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
        "dashboard": {"enabled": True, "namespace": "monitoring"},
        "networkPolicy": {"enabled": True, "apiServer": {"cidrs": ["10.96.0.1/32"]},
                          "metricsFrom": [{"namespaceSelector": {"matchLabels": {
                              "kubernetes.io/metadata.name": "monitoring"}}}]},
        "podDisruptionBudget": {"enabled": True},
        "stepNetworkPolicy": {"namespaces": ["media-a", "media-b"], "s3": {"cidrs": ["10.20.0.0/16"]},
                              "extraEgress": [{"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}],
                                               "ports": [{"port": 443, "protocol": "TCP"}]}]},
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "ghcr"}],
    },
    # CRDs managed elsewhere (GitOps), S3 by a custom Secret, images pinned by digest.
    "external-crds": {
        "crds": {"enabled": False},
        "s3": {"endpoint": "http://ceph-rgw.storage.svc:7480", "credentialsSecret": "media-s3-credentials"},
        "image": {"repository": "registry.example.com/kubemam/operator", "digest": "sha256:" + "a" * 64},
        "workerImage": {"repository": "registry.example.com/kubemam/worker", "digest": "sha256:" + "b" * 64,
                        "pullPolicy": "Always"},
    },
    # Only two namespaces: Roles there, nothing cluster-wide (docs/security.md); S3 on MinIO's port.
    "watch-namespaces": {
        "watchNamespaces": ["media-a", "media-b"],
        "s3": {"endpoint": "http://minio.storage.svc:9000", "credentialsSecret": "kubemam-s3"},
        "workerServiceAccount": {"name": "kubemam-worker", "namespaces": ["media-a", "media-b"]},
    },
    # The conventions of other charts: names, more environment, security contexts merged over the defaults.
    "overrides": {
        "nameOverride": "media-operator",
        "fullnameOverride": "mam",
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"},
                     {"name": "NO_PROXY", "value": "10.96.0.1,.svc,.cluster.local"},
                     {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "podSecurityContext": {"supplementalGroups": [4000], "fsGroupChangePolicy": "OnRootMismatch"},
        "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/kubemam.json"}},
    },
}
# Namespaces the value sets render into: the release's, the worker accounts', the dashboard's.
NAMESPACES = (NAMESPACE, "media-a", "media-b", "monitoring")
RESTRICTED = {f"pod-security.kubernetes.io/{mode}{suffix}": value for mode in ("enforce", "warn")
              for suffix, value in (("", "restricted"), ("-version", "latest"))}


class _StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, which the API server would silently collapse (a template bug)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


@pytest.fixture(scope="module")
def helm() -> str:
    from kubemam_local.gotools import resolve_tool

    return str(resolve_tool("helm"))  # built from the Go module proxy on first use, then cached


def _helm(helm: str, *args: str, values: dict[str, Any] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [helm, *args]
    if values is not None:
        command += ["--values", "-"]
    result = subprocess.run(command, input=yaml.safe_dump(values) if values is not None else None,
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(helm: str, values: dict[str, Any]) -> str:
    return _helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, values=values).stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]




def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint(helm: str, value_set: str) -> None:
    result = _helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=VALUE_SETS[value_set])
    assert "0 chart(s) failed" in result.stdout, result.stdout


def snapshot(text: str) -> str:
    """The rendering with each CRD cut to its name: test_chart_crds_are_the_repository_crds compares
    them with crds/, so a schema change does not touch the snapshots."""
    documents = text.split("\n---\n")
    for i, document in enumerate(documents):
        if document.startswith("# Source: kubemam/templates/crds.yaml"):
            name = yaml.safe_load(document)["metadata"]["name"]
            documents[i] = f"# Source: kubemam/templates/crds.yaml\n# CustomResourceDefinition {name}: files/crds\n"
    return "\n---\n".join(documents)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_render_matches_golden(helm: str, value_set: str) -> None:
    rendered = render(helm, VALUE_SETS[value_set])
    objects(rendered)  # parses, without duplicate keys
    text = snapshot(rendered)
    golden = GOLDEN / f"{value_set}.yaml"
    if UPDATE_GOLDEN:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no snapshot {golden}: run with KUBEMAM_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), (f"the chart renders {value_set} differently from {golden}; if intended, "
                                        "regenerate with KUBEMAM_UPDATE_GOLDEN=1 and review the diff")


def test_the_value_sets_render_what_they_ask_for(helm: str) -> None:
    kinds = {name: sorted(d["kind"] for d in objects(render(helm, values))) for name, values in VALUE_SETS.items()}
    assert kinds["default"] == sorted(["CustomResourceDefinition"] * 4 + [
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
        + ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 4)  # secrets, jobs, configmaps, keys
    assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "ConfigMap"} <= set(
        kinds["everything"])
    assert kinds["everything"].count("ServiceAccount") == 3  # the operator's, and the worker's in two namespaces
    assert "CustomResourceDefinition" not in kinds["external-crds"]
    assert kinds["overrides"] == kinds["default"]


def test_chart_crds_are_the_repository_crds(helm: str) -> None:
    copies = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert copies == sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    for name in copies:
        assert (CHART / "files" / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/kubemam/files/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/kubemam/files/crds/")
    rendered = {d["metadata"]["name"]: d for d in find(objects(render(helm, {})), "CustomResourceDefinition")}
    for name in copies:
        source = yaml.safe_load((REPO / "crds" / name).read_text())
        crd = rendered[source["metadata"]["name"]]
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert crd == source


def test_app_version_and_default_images_match_the_operator(helm: str) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    docs = objects(render(helm, {}))
    (deployment,) = find(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/kubemam/operator:{__version__}"
    settings = operator_config.load(deployment_env(docs))
    assert settings.worker_image == operator_config.OperatorConfig().worker_image
    assert settings == operator_config.OperatorConfig()  # the chart's defaults are the operator's own


def test_every_operator_setting_can_be_set_and_validates(helm: str) -> None:
    for name, values in VALUE_SETS.items():
        env = deployment_env(objects(render(helm, values)))
        operator_config.load(env)  # the operator accepts what the chart renders
        if name == "everything":
            assert set(operator_config.ENV_FIELDS.values()) <= env.keys()
            assert env["KUBEMAM_METRICS_PORT"] == "8080"
            assert env["KUBEMAM_S3_CREDENTIALS_SECRET"] == "kubemam-s3"  # a name, never a value
            assert not any(k.startswith("AWS_") for k in env)


@pytest.mark.parametrize(("setting", "field"), [
    ("replicaCount=2", "/replicaCount"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("s3.credentialsSecret=Not_A_Name", "/s3/credentialsSecret"),
    ("library.uri=http://bucket", "/library/uri"),
    ("jobs.backoffLimit=-1", "/jobs/backoffLimit"),
    ("crds.enable=false", "/crds"),  # a typo is refused rather than ignored
    ("workerImage.digest=latest", "/workerImage/digest"),
    ("logFormat=xml", "/logFormat"),
    ("fullnameOverride=Not_A_Name", "/fullnameOverride"),
    ("s3.retrySeconds=-1", "/s3/retrySeconds"),
    ("watchNamespaces={Not_A_Namespace}", "/watchNamespaces/0"),
    ("admissionPolicy.enable=false", "/admissionPolicy"),
    ("stepNetworkPolicy.s3.cidrs={10.0.0.0}", "/stepNetworkPolicy/s3/cidrs/0"),
])
def test_invalid_values_are_refused_by_name(helm: str, setting: str, field: str) -> None:
    result = _helm(helm, "template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert f"at '{field}'" in result.stderr, result.stderr


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        template = (doc.get("spec") or {}).get("template")
        if template:
            yield f"{doc['kind']}/{doc['metadata']['name']}", template["spec"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_spec_is_restricted(helm: str, value_set: str) -> None:
    specs = list(_pod_specs(objects(render(helm, VALUE_SETS[value_set]))))
    assert specs
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}, where


def test_name_overrides_name_every_object_and_keep_selectors_matching(helm: str) -> None:
    docs = objects(render(helm, VALUE_SETS["overrides"]))
    named = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    assert {d["metadata"]["name"] for d in named} == {"mam", "mam-metrics", "mam-secrets", "mam-jobs",
                                                       "mam-configmaps", "mam-key-secrets"}
    for doc in named:
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "media-operator", doc["kind"]
    (deployment,) = find(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/name"] == "media-operator"
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (service,) = find(docs, "Service")
    assert service["spec"]["selector"] == selector
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "mam"
    (binding,) = find(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "mam" and binding["subjects"][0]["name"] == "mam"
    # nameOverride alone: <release>-<name>, the release name kept when it contains the name.
    only_name = objects(render(helm, {"nameOverride": "mam"}))
    assert find(only_name, "Deployment")[0]["metadata"]["name"] == "kubemam"
    only_name = objects(render(helm, {"nameOverride": "media"}))
    assert find(only_name, "Deployment")[0]["metadata"]["name"] == "kubemam-media"


def test_extra_env_is_appended_and_never_replaces_a_setting(helm: str) -> None:
    env = operator_container(objects(render(helm, VALUE_SETS["overrides"])))["env"]
    default_env = operator_container(objects(render(helm, {})))["env"]
    assert env[:len(default_env)] == default_env
    assert env[len(default_env):] == VALUE_SETS["overrides"]["extraEnv"]
    for name, why in (("KUBEMAM_RECHECK_SECONDS", "is an operator setting: set it by its value"),
                      ("KUBEMAM_S3_RETRY_SECONDS", "is an operator setting: set it by its value"),
                      ("HOME", "is set by the chart itself")):
        result = _helm(helm, "template", RELEASE, str(CHART), values={"extraEnv": [{"name": name, "value": "1"}]},
                       check=False)
        assert result.returncode != 0 and f"extraEnv: {name} {why}" in result.stderr, result.stderr


def test_security_context_overrides_merge_over_the_restricted_defaults(helm: str) -> None:
    defaults = objects(render(helm, {}))
    docs = objects(render(helm, VALUE_SETS["overrides"]))
    pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["securityContext"]
    default_pod = find(defaults, "Deployment")[0]["spec"]["template"]["spec"]["securityContext"]
    assert pod == {**default_pod, "supplementalGroups": [4000], "fsGroupChangePolicy": "OnRootMismatch"}
    container = operator_container(docs)["securityContext"]
    default_container = operator_container(defaults)["securityContext"]
    assert container == {**default_container,
                         "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/kubemam.json"}}
    # A key given wins; maps merge key by key (the capabilities' drop stays when add is given).
    merged = operator_container(objects(render(helm, {
        "podSecurityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}}})))
    assert merged["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert merged["securityContext"]["readOnlyRootFilesystem"] is True
    pod = find(objects(render(helm, {"podSecurityContext": {"runAsUser": 10001}})), "Deployment")[0]
    assert pod["spec"]["template"]["spec"]["securityContext"] == {**default_pod, "runAsUser": 10001}


def test_log_format_reaches_the_operator_command(helm: str) -> None:
    from kubemam.cli import build_parser

    for values, expected in (({}, "text"), ({"logFormat": "json"}, "json")):
        command = operator_container(objects(render(helm, values)))["command"]
        assert command[:2] == ["kubemam", "run"] and f"--log-format={expected}" in command
        assert build_parser().parse_args(command[1:]).log_format == expected  # the operator takes it


# --- the real API server -----------------------------------------------------------------------


MONITORING_CRDS = [  # the Prometheus Operator's kinds, reduced to what lets the API server accept them
    {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
     "metadata": {"name": f"{plural}.monitoring.coreos.com"},
     "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
              "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
              "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                  "type": "object", "properties": {"spec": {"type": "object",
                                                            "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules"))
]


@pytest.fixture(scope="module")
def chart_cluster(api_client: Any) -> Iterator[Any]:
    """The namespaces the value sets render into (enforcing and warning "restricted"), and minimal
    ServiceMonitor/PrometheusRule CRDs (the local cluster has no Prometheus Operator)."""
    core = client.CoreV1Api(api_client)
    ext = client.ApiextensionsV1Api(api_client)
    for name in NAMESPACES:
        try:
            core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
        except ApiException as err:
            if err.status != 409:
                raise
    for crd in MONITORING_CRDS:
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as err:
            if err.status != 409:
                raise
        wait_for(lambda name=crd["metadata"]["name"]: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(name).status.conditions or []), what=f"{name} Established")
    # The default ServiceAccount is what tells a new namespace is ready for pods.
    for name in NAMESPACES:
        wait_for(lambda name=name: exists(lambda: core.read_namespaced_service_account("default", name)))
    yield api_client
    for name in NAMESPACES:
        core.delete_namespace(name)
    rbac = client.RbacAuthorizationV1Api(api_client)
    for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):  # applied by the RBAC test
        try:
            delete(RELEASE)
        except ApiException as err:
            if err.status != 404:
                raise
    admission = client.AdmissionregistrationV1Api(api_client)
    for kind in ("secrets", "jobs", "configmaps", "key-secrets"):  # the admission policies, from the RBAC test too
        for delete in (admission.delete_validating_admission_policy_binding,
                       admission.delete_validating_admission_policy):
            try:
                delete(f"{RELEASE}-{kind}")
            except ApiException as err:
                if err.status != 404:
                    raise
    wait_key_secret_policies_gone(api_client)




@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_server_side_dry_run_apply(helm: str, kubectl: Any, chart_cluster: Any, value_set: str) -> None:
    text = render(helm, VALUE_SETS[value_set])
    result = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-f", "-", input=text)
    applied = [line for line in result.stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == len(objects(text)), result.stdout
    # The namespaces warn on "restricted": the Deployment's pod template would show a warning.
    assert "Warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pod_security_admission_admits_the_operator_pod(helm: str, chart_cluster: Any, value_set: str) -> None:
    """A Pod made from the Deployment's template, judged by the real PodSecurity admission of a
    namespace that enforces "restricted" (dry run: nothing is created)."""
    core = client.CoreV1Api(chart_cluster)
    for where, spec in _pod_specs(objects(render(helm, VALUE_SETS[value_set]))):
        spec = {**spec, "serviceAccountName": "default"}  # the chart's account is not applied in a dry run
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"dry-run-{uuid.uuid4().hex[:8]}"},
               "spec": spec}
        try:
            core.create_namespaced_pod(NAMESPACE, pod, dry_run="All")
        except ApiException as err:
            raise AssertionError(f"{where}: {err.body}") from err
    # The admission is really judging: the same pod with a privilege escalation is refused.
    spec["containers"][0]["securityContext"] = {**spec["containers"][0]["securityContext"],
                                                "allowPrivilegeEscalation": True}
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(NAMESPACE, pod, dry_run="All")
    assert refused.value.status == 403 and "restricted" in str(refused.value.body)


# --- the operator under the chart's RBAC ---------------------------------------------------------




def _can_i(kubectl: Any, subject: str, *args: str) -> bool:
    return kubectl("auth", "can-i", *args, f"--as={subject}", check=False).stdout.strip() == "yes"


def test_the_operator_works_under_the_chart_rbac(helm: str, kubectl: Any, chart_cluster: Any,
                                                 control_plane: Any, tmp_path: Path) -> None:
    """Apply the chart (every option on) for real, run `kubemam run` as its ServiceAccount with the
    Deployment's command and environment, and let it reconcile one object of each kind: any
    permission the chart lacks is a 403 in its log. Then check what it must not be able to do.

    The session's admin operator (the `operator` fixture) must not be running at the same time, or it
    would do part of the work; this module runs first in tests/integration."""
    api = chart_cluster
    core = client.CoreV1Api(api)
    docs = objects(render(helm, VALUE_SETS["everything"]))
    # The CRDs are the session's already; the operator runs here as a process, not as the Deployment.
    kubectl("apply", "--server-side", "--field-manager=helm", "-f", "-", input=yaml.safe_dump_all(
        [d for d in docs if d["kind"] not in ("CustomResourceDefinition", "Deployment")]))
    (deployment,) = find(docs, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    subject = f"system:serviceaccount:{NAMESPACE}:{pod_spec['serviceAccountName']}"
    container = pod_spec["containers"][0]
    env = deployment_env(docs)
    namespace = f"t-rbac-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": RESTRICTED}})
    if env.get("KUBEMAM_S3_CREDENTIALS_SECRET"):
        # The step Jobs name this Secret; without it the operator (rightly) starts no Job.
        core.create_namespaced_secret(namespace, {
            "metadata": {"name": env["KUBEMAM_S3_CREDENTIALS_SECRET"]},
            "stringData": {"AWS_ACCESS_KEY_ID": "rbac-test", "AWS_SECRET_ACCESS_KEY": "rbac-test"}})
    custom = Custom(api, namespace)
    try:
        with chart_operator(Path(control_plane.kubeconfig), api, docs, NAMESPACE, tmp_path) as log_path:
            core.create_namespaced_config_map(namespace, example("distribution-targets.yaml"))
            for file, plural in (("transcodeladder.yaml", "transcodeladders"),
                                 ("archivepolicy.yaml", "archivepolicies"),
                                 ("mediaasset.yaml", "mediaassets"), ("rightswindow.yaml", "rightswindows")):
                custom.create(plural, example(file))
            asset = example("mediaasset.yaml")["metadata"]["name"]
            for file, plural in (("transcodeladder.yaml", "transcodeladders"),
                                 ("archivepolicy.yaml", "archivepolicies"),
                                 ("mediaasset.yaml", "mediaassets"), ("rightswindow.yaml", "rightswindows")):
                name = example(file)["metadata"]["name"]
                wait_for(lambda p=plural, n=name: custom.condition(p, n, "Ready"), timeout=60,
                         what=f"{plural}/{name} Ready condition (operator log: {log_path})")
            jobs = wait_for(lambda: client.BatchV1Api(api).list_namespaced_job(
                namespace, label_selector=f"kubemam.io/asset={asset}").items, timeout=60, what="the ingest Job")
            assert jobs[0].metadata.labels["kubemam.io/step"] == "ingest"
            # Only an ingest so far: no finalizer yet (controllers/asset.py _hold_by_finalizer puts it on before
            # the first Job that archives or publishes; test_asset_finalizer covers the patch itself).
            assert "kubemam.io/finalizer" not in (custom.get("mediaassets", asset)["metadata"].get("finalizers") or [])
            for file, plural in (("rightswindow.yaml", "rightswindows"), ("mediaasset.yaml", "mediaassets"),
                                 ("transcodeladder.yaml", "transcodeladders"),
                                 ("archivepolicy.yaml", "archivepolicies")):
                name = example(file)["metadata"]["name"]
                custom.delete(plural, name)
                wait_for(lambda p=plural, n=name: not exists(lambda: custom.get(p, n)), timeout=60,
                         what=f"{plural}/{name} deleted")
        text = log_path.read_text()
        if "--log-format=json" in container["command"]:  # Kopf's JSON logging: every line one JSON object
            lines = [line for line in text.splitlines() if line.strip()]
            records = [json.loads(line) for line in lines if line.startswith("{")]
            assert lines and len(records) == len(lines), f"lines of the log that are not JSON:\n{text[-6000:]}"
            assert all({"message", "severity", "timestamp"} <= r.keys() for r in records), records[:3]
            assert any(r.get("object", {}).get("kind") == "MediaAsset" for r in records), records[:20]
        # Kopf: APIForbiddenError, "Not enough permissions"; the API client: "Reason: Forbidden".
        for sign in ("Forbidden", "forbidden", "Not enough permissions"):
            assert sign not in text, f"the operator lacked a permission ({sign!r}):\n{text[-6000:]}"
    finally:
        core.delete_namespace(namespace)

    # Least privilege: what the operator must not be able to do.
    assert _can_i(kubectl, subject, "create", "secrets", "-n", namespace)
    assert _can_i(kubectl, subject, "delete", "jobs", "-n", namespace)  # a failed purge Job is run again
    assert _can_i(kubectl, subject, "patch", "mediaassets.kubemam.io", "-n", namespace)  # the finalizer
    assert _can_i(kubectl, subject, "get", "configmaps/kubemam-distribution", "-n", namespace)
    for verb, resource in (("list", "secrets"), ("watch", "secrets"), ("get", "configmaps/other"),
                           ("create", "pods"), ("create", "deployments"),
                           ("delete", "mediaassets.kubemam.io"), ("create", "leases.coordination.k8s.io"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"), ("update", "nodes")):
        assert not _can_i(kubectl, subject, verb, resource, "-n", namespace), f"the operator may {verb} {resource}"
    # Step pods mount no token, and the worker account is bound to nothing.
    (worker,) = [sa for sa in find(docs, "ServiceAccount") if sa["metadata"]["namespace"] == "media-a"]
    assert worker["automountServiceAccountToken"] is False
    worker_subject = f"system:serviceaccount:media-a:{worker['metadata']['name']}"
    for verb, resource in (("get", "pods"), ("get", "secrets"), ("get", "configmaps"),
                           ("list", "mediaassets.kubemam.io"), ("create", "events")):
        assert not _can_i(kubectl, worker_subject, verb, resource, "-n", "media-a"), f"the worker may {verb} {resource}"




# --- NOTES.txt (helm template does not render it; helm install --dry-run does, with a cluster to ask) ----


def install_notes(helm: str, kubeconfig: str, values: dict[str, Any]) -> str:
    """The notes `helm install` prints. A dry run creates nothing; --take-ownership only skips the check of
    objects other tests applied (the session's CRDs, the RBAC test's objects), since nothing is installed."""
    result = _helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                   "--take-ownership", "--kubeconfig", kubeconfig, values=values)
    assert "\nNOTES:\n" in result.stdout, result.stdout[-2000:]
    return result.stdout.split("\nNOTES:\n", 1)[1]


@pytest.mark.parametrize("value_set", ["default", "everything"])
def test_install_notes(helm: str, control_plane: Any, value_set: str) -> None:
    notes = install_notes(helm, str(control_plane.kubeconfig), VALUE_SETS[value_set])
    golden = GOLDEN / f"NOTES-{value_set}.txt"
    if UPDATE_GOLDEN:
        golden.write_text(notes)
    home = yaml.safe_load((CHART / "Chart.yaml").read_text())["home"]
    for line in (f"kubemam {__version__} is installed: release {RELEASE} in namespace {NAMESPACE}.",
                 f"kubectl -n {NAMESPACE} get deploy kubemam", f"kubectl -n {NAMESPACE} logs deploy/kubemam",
                 f"{home}/tree/main/examples", f"{home}/blob/main/docs/runbooks.md"):
        assert line in notes, f"{line!r} not in the notes:\n{notes}"
    secret = VALUE_SETS[value_set].get("s3", {}).get("credentialsSecret")
    if secret:
        assert f"read the Secret {secret}" in notes and "WARNING" not in notes
        assert "PrometheusRule kubemam" in notes and "ConfigMap kubemam-dashboard in monitoring" in notes
    else:
        assert "WARNING: s3.credentialsSecret is empty" in notes
    assert notes == golden.read_text(), f"the notes differ from {golden}: regenerate with KUBEMAM_UPDATE_GOLDEN=1"
