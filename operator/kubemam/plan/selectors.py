"""Kubernetes label-selector semantics, for choosing the assets a RightsWindow covers."""

from __future__ import annotations

from collections.abc import Mapping

from kubemam.api.common import LabelSelector
from kubemam.api.rights import AssetSelection


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or []:
        values = set(req.values or [])
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def selected(selection: AssetSelection, name: str, labels: Mapping[str, str]) -> bool:
    """An asset is covered when it is named, or when the selector matches its labels."""
    if selection.names and name in selection.names:
        return True
    return selection.selector is not None and selector_matches(selection.selector, labels)
