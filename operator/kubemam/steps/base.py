"""Base models of the step contract: camelCase JSON both ways, like the API."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, ValidationError

from kubemam.api.attempt import StepAttempt
from kubemam.api.common import KubeModel

ATTEMPT_FIELD = "attempt"
MAX_MESSAGE = 4096  # what Kubernetes keeps of a termination message, where a step's result travels


class StepInput(KubeModel):
    """What the planner asks of a step. Unknown fields are refused: planner and worker must agree."""


class AttemptedInput(StepInput):
    """The input of a step the planner re-runs by itself (plan/stepjob.py): `attempt` names the run — so a
    re-run is a Job of its own — never the work: workers hash and commit `work_inputs` alone."""

    attempt: StepAttempt | None = None


def work_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """The inputs that determine a step's work and outputs: everything but the attempt marker."""
    return {key: value for key, value in inputs.items() if key != ATTEMPT_FIELD}


class StepResult(KubeModel):
    """What a step reports (its termination message and its manifest's result). Fields the operator
    does not read are kept, so a newer worker's extra facts never make a result unreadable."""

    model_config = ConfigDict(**{**KubeModel.model_config, "extra": "allow"})


def _where(loc: tuple[int | str, ...]) -> str:
    """("actions", 0, "origin") -> actions[0].origin; a top-level field -> input.usage."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text if len(loc) > 1 else f"input.{text}" if text else "input"


def input_problem(err: ValidationError) -> str:
    """The first problem of a refused input, naming the field as the wire spells it."""
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    where = _where(loc)
    kind = first["type"]
    if kind == "missing":
        message = f"{_where(loc[:-1])} needs {loc[-1]}"
    elif kind == "literal_error":
        known = ", ".join(re.findall(r"'([^']*)'", str((first.get("ctx") or {}).get("expected", ""))))
        message = f"{where} {first['input']!r} is unknown (known: {known})"
    elif kind == "value_error":
        message = f"{where} {(first.get('ctx') or {}).get('error', first['msg'])}"
    else:
        message = f"{where}: {first['msg']}"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return message[:300] + more
