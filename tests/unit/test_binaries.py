"""The wrapper Go module: what `kubemam local pin-kube` renders is what is committed."""

from __future__ import annotations

import re

from kubemam_local.binaries import KUBE_MODULE_DIR, KUBE_PACKAGES, etcd_version, kube_version, version_ldflags
from kubemam_local.pinning import render_gomod, staging_modules

RELEASE_GOMOD = """\
module k8s.io/kubernetes
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other/thing => github.com/fork/thing v1.0.0
)
"""


def test_staging_modules_come_from_the_release_replace_block() -> None:
    assert staging_modules(RELEASE_GOMOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_committed_gomod_pins_every_staging_module_to_the_release() -> None:
    gomod = (KUBE_MODULE_DIR / "go.mod").read_text()
    version = kube_version()
    minor = version.split(".")[1]
    # Staging modules are the k8s.io modules released as v0.<minor>.x alongside the release.
    staging = dict(re.findall(rf"^\t(k8s\.io/[\w.-]+) (v0\.{minor}\.\d+)\b", gomod, re.M))
    assert len(staging) >= 20, staging
    assert set(staging.values()) == {"v0." + version.removeprefix("v1.")}
    assert {"k8s.io/api", "k8s.io/apiserver", "k8s.io/client-go", "k8s.io/controller-manager"} <= set(staging)
    rendered = render_gomod(version, "1.26.0", sorted(staging))
    assert rendered.count(f"\tk8s.io/kubernetes {version}\n") == 1
    assert all(f"\t{module} v0.{minor}." in rendered for module in staging)
    tools = gomod.split("tool (")[1]
    for pkg in KUBE_PACKAGES.values():
        assert f"\t{pkg}\n" in tools
    assert etcd_version().startswith("v3.")
    assert (KUBE_MODULE_DIR / "go.sum").stat().st_size > 0


def test_version_ldflags_make_version_truthful() -> None:
    flags = version_ldflags("v1.36.3")
    assert "-X k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=36" in flags
