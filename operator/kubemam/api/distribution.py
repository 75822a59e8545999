"""Distribution targets: where a channel's content is delivered (an S3 origin) and for which
territories. Kept as GitOps-friendly data in a ConfigMap of the namespace (`kubemam-distribution`,
key `targets.yaml`, a YAML list), watched by the operator."""

from __future__ import annotations

from pydantic import Field, TypeAdapter, field_validator

from kubemam.api.common import DNS_LABEL, KubeModel
from kubemam.api.rights import Channel
from kubemam.api.territories import known_territories

TARGETS_CONFIGMAP = "kubemam-distribution"
TARGETS_KEY = "targets.yaml"


class DistributionTarget(KubeModel):
    name: str = Field(max_length=63, pattern=DNS_LABEL)
    channel: Channel
    origin: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                        description="S3 prefix the CDN serves; an asset lands under <origin>/<namespace>/<asset>/")
    territories: list[str] = Field(min_length=1, description="ISO 3166-1 alpha-2 codes this origin serves.")
    purge_webhook: str | None = Field(default=None, pattern=r"^https?://.+$",
                                      description="POSTed after a takedown so the CDN drops its copies.")

    _known_territories = field_validator("territories")(known_territories)


TARGET_LIST = TypeAdapter(list[DistributionTarget])


def origin_folder(origin: str) -> str:
    """bucket/prefix/ of an s3:// origin: one string per folder, so that nesting is a prefix test."""
    path = origin.removeprefix("s3://").strip("/")
    return f"{path}/"


def overlapping_origins(targets: list[DistributionTarget]) -> list[tuple[DistributionTarget, DistributionTarget]]:
    """Pairs of targets whose origins are the same folder or one inside the other: a takedown from one
    would delete what the other serves, and a batch could not hold both."""
    folders = [(origin_folder(t.origin), t) for t in targets]
    return [(a, b) for i, (fa, a) in enumerate(folders) for fb, b in folders[i + 1:]
            if fa.startswith(fb) or fb.startswith(fa)]


def parse_targets(document: object) -> list[DistributionTarget]:
    """The targets of a ConfigMap's YAML (already loaded); duplicate names and overlapping origins are
    refused, naming both targets."""
    targets = TARGET_LIST.validate_python(document or [])
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate target names: {', '.join(duplicates)}")
    overlaps = overlapping_origins(targets)
    if overlaps:
        raise ValueError("overlapping origins (a takedown from one would delete the other's content): " + "; ".join(
            f"{a.name} ({a.origin}) and {b.name} ({b.origin})" for a, b in overlaps))
    return targets
