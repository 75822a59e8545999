"""Python command-line tools the tests run that cannot share the project's environment, each pinned and
installed from PyPI into a virtual environment of its own under the cache.

checkov pins boto3/botocore exactly (1.35.x for checkov 3.3.30) and would downgrade the operator's boto3
in the project's environment; in its own venv it changes nothing the operator or workers import.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubemam_local.binaries import BinaryError, cache_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PythonTool:
    name: str  # the console script
    requirement: str  # what pip installs, pinned
    version: str
    env_var: str  # an explicit binary wins

    @property
    def venv(self) -> Path:
        return cache_root() / self.name / self.version / "venv"


CHECKOV = PythonTool("checkov", "checkov==3.3.30", "3.3.30", "CHECKOV_BINARY")
TOOLS = {tool.name: tool for tool in (CHECKOV,)}
INSTALL_TIMEOUT_SECONDS = 900


def resolve_python_tool(name: str, allow_install: bool = True) -> Path:
    tool = TOOLS[name]
    explicit = os.environ.get(tool.env_var)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BinaryError(f"{tool.env_var}={explicit} is not an executable file")
        return Path(explicit)
    binary = tool.venv / "bin" / tool.name
    if os.access(binary, os.X_OK):
        return binary
    if not allow_install:
        raise BinaryError(f"no {tool.name}: set {tool.env_var} or install {tool.requirement} into {tool.venv}")
    tool.venv.parent.mkdir(parents=True, exist_ok=True)
    with open(tool.venv.parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions starting at once install once
        if os.access(binary, os.X_OK):
            return binary
        started = time.monotonic()
        log.info("installing %s into %s", tool.requirement, tool.venv)
        for command in ([sys.executable, "-m", "venv", "--clear", str(tool.venv)],
                        [str(tool.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", tool.requirement]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS)
            if result.returncode != 0:
                raise BinaryError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
        log.info("installed %s in %.0fs", tool.name, time.monotonic() - started)
    return binary
