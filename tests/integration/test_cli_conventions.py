"""`kubemam status` and `describe` as kubectl users expect them, against the real API server: `-o json|yaml`
that parses, `--kubeconfig` and `--context`, `-l` selectors, `describe` for all four kinds, and the same
commands as `kubectl kubemam …` (kubectl finds the plugin on PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helpers import Custom, example, wait_for

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _cli(*args: str, kubeconfig: Path | None = None, env: dict[str, str] | None = None,
         command: tuple[str, ...] = (sys.executable, "-m", "kubemam")) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        environ["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([*command, *args], env=environ, capture_output=True, text=True, timeout=60)


def _with_contexts(control_plane: Any, tmp_path: Path, namespace: str) -> Path:
    """The test cluster's kubeconfig with a second context, `media`, whose namespace is the test's."""
    config = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    base = config["contexts"][0]
    config["contexts"].append({"name": "media", "context": {**base["context"], "namespace": namespace}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def _apply_examples(api_client: Any, namespace: str) -> Custom:
    custom = Custom(api_client, namespace)
    for name, plural in (("transcodeladder.yaml", "transcodeladders"), ("archivepolicy.yaml", "archivepolicies"),
                         ("rightswindow.yaml", "rightswindows"), ("mediaasset.yaml", "mediaassets")):
        custom.create(plural, example(name))
    other = example("mediaasset.yaml")
    other["metadata"] = {"name": "other-title", "labels": {"kubemam.io/series": "elsewhere"}}
    custom.create("mediaassets", other)
    return custom


def test_status_and_describe_speak_json_yaml_selectors_and_contexts(control_plane: Any, api_client: Any,
                                                                    namespace: str, tmp_path: Path) -> None:
    custom = _apply_examples(api_client, namespace)
    asset = example("mediaasset.yaml")["metadata"]
    kubeconfig = _with_contexts(control_plane, tmp_path, namespace)

    # --context picks the namespace, as kubectl does; -o json parses and carries both assets and the window.
    result = _cli("status", "-o", "json", "--kubeconfig", str(kubeconfig), "--context", "media")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["scope"] == f"namespace {namespace}"
    assert sorted(a["name"] for a in document["assets"]) == sorted([asset["name"], "other-title"])
    window = example("rightswindow.yaml")["metadata"]["name"]
    assert [w["name"] for w in document["windows"]] == [window]
    assert document["windows"][0]["state"] in ("Scheduled", "Open", "Closed")

    # -l selects by label; YAML parses to the same shape.
    series = asset["labels"]["kubemam.io/series"]
    selected = yaml.safe_load(_cli("status", "-o", "yaml", "-n", namespace, "-l", f"kubemam.io/series={series}",
                                   kubeconfig=kubeconfig).stdout)
    assert [a["name"] for a in selected["assets"]] == [asset["name"]]

    # describe, all four kinds, by short and long names.
    ladder = example("transcodeladder.yaml")["metadata"]["name"]
    policy = example("archivepolicy.yaml")["metadata"]["name"]
    texts = {kind: _cli("describe", kind, name, "-n", namespace, kubeconfig=kubeconfig)
             for kind, name in (("ma", asset["name"]), ("tl", ladder), ("rightswindow", window),
                                ("archivepolicies", policy))}
    for kind, text in texts.items():
        assert text.returncode == 0, (kind, text.stderr)
    assert texts["ma"].stdout.startswith(f"MediaAsset {namespace}/{asset['name']}\n")
    assert texts["tl"].stdout.startswith(f"TranscodeLadder {namespace}/{ladder}\n")
    assert "Renditions" in texts["tl"].stdout and asset["name"] in texts["tl"].stdout  # the assets using it
    assert texts["rightswindow"].stdout.startswith(f"RightsWindow {namespace}/{window}\n")
    assert texts["archivepolicies"].stdout.startswith(f"ArchivePolicy {namespace}/{policy}\n")
    assert "Locations" in texts["archivepolicies"].stdout and "Tiers" in texts["archivepolicies"].stdout

    described = json.loads(_cli("describe", "tl", ladder, "-n", namespace, "-o", "json", kubeconfig=kubeconfig).stdout)
    assert described["kind"] == "TranscodeLadder" and described["object"]["metadata"]["name"] == ladder
    assert described["assets"] == sorted([asset["name"], "other-title"])
    # The asset's Jobs as the API server holds them: none, unless the session's operator runs by now (a
    # Job it creates while describe runs may or may not be in the document, so: before ⊆ described ⊆ after).
    def owned() -> set[str]:
        return {j.metadata.name for j in client.BatchV1Api(api_client).list_namespaced_job(namespace).items
                if any(o.uid == uid for o in j.metadata.owner_references or [])}

    uid = custom.get("mediaassets", asset["name"])["metadata"]["uid"]
    before = owned()
    as_yaml = yaml.safe_load(_cli("describe", "ma", asset["name"], "-n", namespace, "-o", "yaml",
                                  kubeconfig=kubeconfig).stdout)
    assert as_yaml["object"]["spec"]["source"] == example("mediaasset.yaml")["spec"]["source"]
    assert before <= {j["name"] for j in as_yaml["jobs"]} <= owned()

    missing = _cli("describe", "tl", "no-such-ladder", "-n", namespace, kubeconfig=kubeconfig)
    assert missing.returncode == 1 and "transcodeladder 'no-such-ladder' not found" in missing.stderr
    wrong_context = _cli("status", "--kubeconfig", str(kubeconfig), "--context", "no-such-context")
    assert wrong_context.returncode == 1 and "no-such-context" in wrong_context.stderr


def test_kubectl_finds_the_plugin(control_plane: Any, api_client: Any, namespace: str, tmp_path: Path) -> None:
    _apply_examples(api_client, namespace)
    kubectl = str(control_plane.binaries["kubectl"])
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = _cli("kubemam", "status", "-n", namespace, "-o", "json", kubeconfig=Path(control_plane.kubeconfig),
                  env=env, command=(kubectl,))
    assert result.returncode == 0, result.stderr
    assert {a["name"] for a in json.loads(result.stdout)["assets"]} == {
        example("mediaasset.yaml")["metadata"]["name"], "other-title"}
    plugins = subprocess.run([kubectl, "plugin", "list"], env={**os.environ, **env}, capture_output=True, text=True,
                             timeout=60)
    assert "kubectl-kubemam" in plugins.stdout


def test_kubectl_explain_teaches_the_api(control_plane: Any, kubectl: Any) -> None:
    """Every spec field carries a description, so `kubectl explain` reads like a reference."""
    # The API server publishes a new CRD's OpenAPI a few seconds after it is established.
    markers = wait_for(lambda: kubectl("explain", "mediaasset.spec.markers", check=False).stdout, timeout=60,
                       what="the CRDs' OpenAPI")
    assert "Frame-accurate points and ranges" in markers
    for field, words in (("start", "SMPTE timecode"), ("kind", "adBreak"), ("end", "not before start")):
        assert field in markers and words.lower() in markers.lower(), (field, markers)
    assert "When it closes" in kubectl("explain", "rightswindow.spec.end").stdout
    assert "GOP-aligned chunks" in kubectl("explain", "transcodeladder.spec.chunking").stdout
    assert "re-hashed" in kubectl("explain", "archivepolicy.spec.fixity").stdout
    conditions = kubectl("explain", "mediaasset.status.conditions").stdout
    assert "one per type" in conditions
