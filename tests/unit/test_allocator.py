"""kubemam/allocator.py: the operator's glibc arena cap, and the settings that leave it alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubemam.allocator import cap_malloc_arenas


def test_the_cap_is_set_by_default_and_left_to_the_user_or_glibc_when_asked() -> None:
    # In a child process: mallopt changes the interpreter that calls it.
    code = "from kubemam.allocator import cap_malloc_arenas as c; print(c({}), c({'KUBEMAM_MALLOC_ARENAS': '4'}))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["2", "4"]
    assert cap_malloc_arenas({"KUBEMAM_MALLOC_ARENAS": "0"}) is None
    assert cap_malloc_arenas({"MALLOC_ARENA_MAX": "8", "KUBEMAM_MALLOC_ARENAS": "2"}) is None


def test_a_setting_that_is_not_a_number_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="KUBEMAM_MALLOC_ARENAS='two'"):
        cap_malloc_arenas({"KUBEMAM_MALLOC_ARENAS": "two"})
