"""Process identity from /proc: is the process that wrote a snapshot still that process?

A pid alone can be reused after a crash, so a snapshot records its writer's pid, the
kernel's start time of that process (clock ticks since boot) and the boot id; a reader
compares all three. Outside Linux (no /proc) every answer is "cannot tell" (None).
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def start_ticks(pid: int, proc: Path = PROC) -> int | None:
    """The process's start time since boot in clock ticks (field 22 of the stat of its
    main thread, /proc/PID/task/PID/stat: the same value as /proc/PID/stat, which
    qemu-user answers itself for an emulated program reading its own, with a start time
    of its own; tools/target_check.sh); None when there is no such process or /proc
    cannot say."""
    try:
        task = proc / str(int(pid)) / "task" / str(int(pid)) / "stat"
        stat = task.read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces or ")"
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall: 3 is fields[0]
    except (IndexError, ValueError):
        return None


def boot_id(proc: Path = PROC) -> str | None:
    try:
        return (proc / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def identity(pid: int | None = None, proc: Path = PROC) -> dict[str, object]:
    """{pid, process_start, boot_id} of this (or the given) process, for a snapshot."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "process_start": start_ticks(pid, proc), "boot_id": boot_id(proc)}


def still_running(snapshot: dict, proc: Path = PROC) -> bool | None:
    """True when the snapshot's writer is alive (same boot, same pid, same start time);
    False when it is certainly gone; None when this cannot be told (no /proc, a snapshot
    from an older version without the fields, another boot's pid namespace)."""
    pid, started, boot = (snapshot.get(k) for k in ("pid", "process_start", "boot_id"))
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    current_boot = boot_id(proc)
    if current_boot is None:
        return None
    if isinstance(boot, str) and boot != current_boot:
        return False  # written before a reboot: that process is gone
    now_started = start_ticks(pid, proc)
    if now_started is None:
        return False if (proc / "self").exists() else None
    if isinstance(started, int) and not isinstance(started, bool):
        return now_started == started
    return None
