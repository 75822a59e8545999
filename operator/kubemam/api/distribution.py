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


def parse_targets(document: object) -> list[DistributionTarget]:
    """The targets of a ConfigMap's YAML (already loaded); duplicate names are refused."""
    targets = TARGET_LIST.validate_python(document or [])
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate target names: {', '.join(duplicates)}")
    return targets
