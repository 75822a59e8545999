"""Building blocks shared by every kind: the camelCase base model, conditions, references."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kubemam.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Held by a MediaAsset while deleting it needs the operator (takedown, purge of archived copies). Pinned.
FINALIZER = f"{GROUP}/finalizer"

# RFC 1123 label, the shape of most Kubernetes object names we refer to.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain, for names that may contain dots.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# SMPTE ST 12-1 timecode HH:MM:SS:FF; ';' (or '.') before the frames marks drop-frame.
SMPTE_TIMECODE = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9][:;.][0-9]{2}$"
# BCP 47 language tag, the common subset (language, optional script, region).
BCP47 = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$"
# A Kubernetes resource quantity, e.g. 500m, 2, 4Gi.
QUANTITY = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# Any URI with a scheme; which schemes are supported is the operator's judgement, not the schema's.
URI = r"^[a-zA-Z][a-zA-Z0-9+.-]*://.+$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry; fieldPath makes the API server name the field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _config(json_schema_extra: dict[str, Any] | None = None) -> ConfigDict:
    config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=True)
    if json_schema_extra:
        config["json_schema_extra"] = json_schema_extra
    return config


def validated_by(*rules: dict[str, str]) -> ConfigDict:
    """A model config whose schema carries CEL rules the API server checks at admission."""
    return _config(json_schema_extra={"x-kubernetes-validations": list(rules)})


class KubeModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, unknown fields refused."""

    model_config = _config()

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as the API server holds it (aliases, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(KubeModel):
    """A reference to an object of a known kind in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="The object's name.")


class SecretKeyReference(KubeModel):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="The Secret's name.")
    key: str | None = Field(default=None, min_length=1, max_length=253, description="The key within the Secret.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(KubeModel):
    """A metav1.Condition: lastTransitionTime moves only when status flips."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


def conditions_field() -> Any:
    """status.conditions as Kubernetes API conventions declare it: a map list keyed by type, so
    server-side apply and `kubectl explain` treat each condition type as one entry."""
    return Field(default=None, max_length=64, description="The object's conditions, one per type; Ready sums up.",
                 json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


class LabelSelectorRequirement(KubeModel):
    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How the key relates to values.")
    values: list[str] | None = Field(default=None, max_length=64, description="Values for In and NotIn.")


class LabelSelector(KubeModel):
    match_labels: dict[str, str] | None = Field(default=None, description="Labels that must all match exactly.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=16,
                                                                     description="Requirements that must all hold.")


class ResourceList(KubeModel):
    cpu: str | None = Field(default=None, pattern=QUANTITY, description="CPU, e.g. 500m or 2.")
    memory: str | None = Field(default=None, pattern=QUANTITY, description="Memory, e.g. 512Mi or 4Gi.")


class ResourceRequirements(KubeModel):
    """Pod resources for the Jobs a resource produces."""

    requests: ResourceList | None = Field(default=None, description="What the scheduler reserves.")
    limits: ResourceList | None = Field(default=None, description="The most a pod may use.")
