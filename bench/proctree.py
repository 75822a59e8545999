"""A process and its descendants, from /proc: what the benchmarks sum or compare as one step's memory."""

from __future__ import annotations

import contextlib
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


CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")  # cgroup v1's memory controller, where a pod's limit lives


class MemoryGroup:
    """A cgroup (v1) of its own for one measured process and everything it starts, read for its anonymous
    memory: what a pod's memory limit cannot take back. Shared libraries and other file pages are left out —
    clean ones the kernel reclaims before the limit kills, and a group is charged for them only when it touches
    them first, so counting them measured what else ran on the machine (ffmpeg's libraries cost a step 0 or
    ~50 MiB as another ffmpeg had them mapped or not). A sum of VmRSS counts them once per process.

    Usable as root on a cgroup v1 host (this machine, CI); `open` returns None elsewhere."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, name: str) -> MemoryGroup | None:
        path = CGROUP_MEMORY / name
        try:
            path.mkdir()
            (path / "memory.stat").read_text()
        except OSError:
            return None
        return cls(path)

    def join(self) -> None:
        """Move the calling process into the group (a Popen preexec_fn: the child joins before it execs)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def anonymous(self) -> int:
        """Bytes of anonymous memory (heaps, buffers, stacks) the group's processes hold now."""
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        return int(stat["total_rss"]) + int(stat.get("total_swap", 0))

    def close(self) -> None:
        """Remove the group once its processes are gone (its charges move to the parent)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()
