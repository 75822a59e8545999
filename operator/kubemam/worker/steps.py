"""`kubemam worker <step>`: run one step; a StepError becomes a clear message and the permanent-failure
exit code (the Job fails at once, see plan/jobs.py).

Any other exception propagates: its traceback on stderr becomes the termination message
(terminationMessagePolicy FallbackToLogsOnError) and the Job controller retries the pod.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from kubemam.plan.jobs import PERMANENT_FAILURE_EXIT_CODE
from kubemam.worker.contract import StepError, write_result

# fixity and purge are modes of the archive worker; they are steps of their own so their Jobs say what they do.
STEPS = ("ingest", "transcode", "package", "distribute", "archive", "fixity", "purge", "migrate")


def main(step: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if step == "ingest":
            from kubemam.worker import ingest

            return ingest.run()
        if step == "transcode":
            from kubemam.worker import transcode

            return transcode.run()
        if step == "package":
            from kubemam.worker import package

            return package.run()
        if step == "distribute":
            from kubemam.worker import distribute

            return distribute.run()
        if step in ("archive", "fixity", "purge"):
            from kubemam.worker import archive

            return archive.run()
        if step == "migrate":
            from kubemam.worker import migrate

            return migrate.run()
        raise StepError(f"unknown step {step!r} (known: {', '.join(STEPS)})")
    except StepError as err:
        print(f"{step}: {err}", file=sys.stderr)
        with contextlib.suppress(OSError):
            write_result({"error": str(err)[:3500]})
        return PERMANENT_FAILURE_EXIT_CODE
