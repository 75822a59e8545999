"""`kubemam worker <step>`: run one registered step (steps/registry.py).

Every failure reaches the asset in the worker's own words, as a JSON termination message:
- a StepError (bad input, wrong checksum, not media), an unknown step or an input the step's model
  refuses: permanent, exit 2 (the Job's podFailurePolicy fails the Job at once);
- any other exception: its traceback goes to stderr and `{"error": "...", "retryable": true}` to the
  termination message, exit 1, and the Job controller retries the pod;
- SIGTERM (the pod deleted, evicted, or its node drained): `{"error": ..., "retryable": true}`, exit 143, so
  a step whose ffmpeg died with it is never mistaken for a permanent failure.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import traceback
from types import FrameType

from pydantic import ValidationError

from kubemam.plan.jobs import PERMANENT_FAILURE_EXIT_CODE
from kubemam.redact import RedactingFilter, redact_text
from kubemam.steps.base import input_problem
from kubemam.steps.registry import STEPS, UnknownStep, step
from kubemam.worker.contract import StepError, step_input, write_result
from kubemam.worker.heap import share_one_arena

RETRYABLE_FAILURE_EXIT_CODE = 1
TERMINATED_EXIT_CODE = 128 + signal.SIGTERM
MAX_ERROR = 3500  # leaves room in the 4 KiB termination message for the JSON around it


class Terminated(BaseException):
    """SIGTERM: raised in the main thread so it unwinds (subprocess.run kills its child) past any
    `except Exception` of the step's own."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _report(error: str, retryable: bool) -> None:
    with contextlib.suppress(OSError, ValueError):
        write_result({"error": redact_text(error)[:MAX_ERROR], **({"retryable": True} if retryable else {})})


def _missing_tool(err: FileNotFoundError) -> bool:
    """subprocess could not find the program it was asked to run (a bare name, not on PATH)."""
    program = str(err.filename or "")
    return bool(program) and "/" not in program and shutil.which(program) is None


def main(name: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # a presigned source's signature never reaches the pod's log
        handler.addFilter(RedactingFilter())
    signal.signal(signal.SIGTERM, _terminated)
    share_one_arena()
    try:
        try:
            registered = step(name)
        except UnknownStep as err:
            raise StepError(str(err)) from None
        try:
            registered.validate_input(step_input())
        except ValidationError as err:
            raise StepError(input_problem(err)) from err
        return registered.load_entry()()
    except Terminated:
        print(f"{name}: stopped by SIGTERM", file=sys.stderr)
        _report(f"{name} was stopped (SIGTERM: the pod was deleted or evicted); it runs again", retryable=True)
        return TERMINATED_EXIT_CODE
    except StepError as err:
        print(redact_text(f"{name}: {err}"), file=sys.stderr)
        _report(f"{name}: {err}", retryable=False)
        return PERMANENT_FAILURE_EXIT_CODE
    except Exception as err:  # noqa: BLE001 - a crash is reported in words, then retried by the Job controller
        if isinstance(err, FileNotFoundError) and _missing_tool(err):
            # A tool the image lacks (ffprobe, kubemam-encrypt): no retry brings it; the image must change.
            message = f"{name}: {err.filename} is not installed in the worker image (not on PATH)"
            print(message, file=sys.stderr)
            _report(message, retryable=False)
            return PERMANENT_FAILURE_EXIT_CODE
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        _report(f"{name} failed (the Job retries it): {type(err).__name__}: {err}", retryable=True)
        return RETRYABLE_FAILURE_EXIT_CODE


__all__ = ["STEPS", "main"]
