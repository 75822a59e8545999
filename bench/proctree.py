"""A process and its descendants, from /proc: what the benchmarks sum or compare as one step's memory."""

from __future__ import annotations

import os
from pathlib import Path


def descendants(root: int) -> set[int]:
    """root and every process below it, now (a process that is gone by the time it is read is left out)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


def memory(pid: int) -> tuple[str, int, int] | None:
    """(command, resident bytes, peak resident bytes — VmHWM, per exec'd image) of one process; None when it is
    gone or a zombie."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return (fields["Name"].strip(), int(fields["VmRSS"].split()[0]) * 1024,
                int(fields["VmHWM"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError, IndexError):
        return None
