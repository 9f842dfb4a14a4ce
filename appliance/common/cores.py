"""How many CPU cores the appliance uses for its frame loop, and how it spends them.

`models.threads` is the number of cores given to the vision pipeline: "auto" (the
default) is the CPUs this process may run on, read from its affinity mask, so systemd's
`CPUAffinity=` and `taskset` are honoured. The plan for N cores (BENCHMARKS.md, Cores,
has the measurements behind it):

- N = 1: everything on the one thread that runs the frame loop, exactly as before: every
  TFLite model on one thread, OpenCV sequential (cv2.setNumThreads(1)), no overlap.
- N >= 2: the frame loop keeps N cores when N <= 2 and N - 1 above, so the publisher,
  Spotify sync, VLM and MQTT threads keep a core. Its stages overlap across frames: the
  loop finds the faces of frame t+1 while one worker classifies frame t (emotion CNN, VA
  model, smoothing) and posts it, one frame in flight at most (appliance/service/stages.py).
  Each stage has one core, so every model runs on one TFLite thread with two cores. From
  three frame-loop cores (a Pi 4), the cores beyond the two stages' own go, as TFLite
  threads, to the models of the stage that takes longer on this machine, timed at start
  (`give_spare_threads`): here (x86 with AMX int8) that is BlazeFace, on a Pi's NEON it is
  expected to be the emotion CNN with its mirrored view. A model whose threads do not
  pay keeps one whatever its stage has (runtime.threads_that_pay, or its card). OpenCV
  stays sequential: its work per frame is small resizes, and a pool of its own would
  compete with the two stages; except when OpenCV's Haar cascade finds the faces
  (BlazeFace missing), whose stage then outweighs the rest ~20x and gets the frame
  loop's cores as OpenCV threads (Pipeline.from_config).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

AUTO = "auto"
MAX_CORES = 8


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_cores(setting: str | int) -> int:
    """`models.threads` as a number of cores: "auto" is the affinity mask's CPUs."""
    text = str(setting).strip().lower()
    if text == AUTO:
        return min(MAX_CORES, available_cores())
    cores = int(text)
    if not 1 <= cores <= MAX_CORES:
        raise ValueError(f"models.threads: expected auto or 1..{MAX_CORES}, got {setting!r}")
    return cores


@dataclass(frozen=True)
class CorePlan:
    """How the frame loop spends its cores (module doc). Per-model TFLite threads are
    these stage budgets capped per model (what a model ends up with is in
    `Pipeline.describe()["threads"]`)."""

    setting: str  # models.threads as configured ("auto", "2")
    cores: int  # cores given: the setting, or the affinity mask's CPUs for "auto"
    loop_cores: int  # the frame loop's share: all of them up to 2, one fewer above
    overlap: bool  # detect frame t+1 while a worker classifies frame t
    detector_threads: int  # TFLite threads for the face detector (the loop's stage)
    classifier_threads: int  # TFLite threads for the emotion CNN and the VA model
    opencv_threads: int  # cv2.setNumThreads

    def describe(self) -> dict:
        return asdict(self)


def plan_cores(setting: str | int = AUTO) -> CorePlan:
    """The plan for `models.threads`. From three frame-loop cores the spare ones go to
    the detector until `give_spare_threads` has timed the stages (Pipeline.from_config)."""
    cores = resolve_cores(setting)
    loop = cores if cores <= 2 else cores - 1
    if loop == 1:
        return CorePlan(str(setting), cores, 1, False, 1, 1, 1)
    # two stages, one core each; any more to the detector's XNNPACK threads
    return CorePlan(str(setting), cores, loop, True, loop - 1, 1, 1)


def give_spare_threads(plan: CorePlan, detect_ms: float, finish_ms: float) -> CorePlan:
    """With three or more frame-loop cores, the threads beyond the two stages' own go to
    the stage whose models take longer per frame on one thread (`detect_ms`: the
    detector's invoke; `finish_ms`: the emotion CNN's and the VA model's), so the slower
    stage, which sets the frame rate when they overlap, gets faster; the other keeps one.
    Fewer cores: the plan as it is."""
    if not plan.overlap or plan.loop_cores < 3:
        return plan
    spare = plan.loop_cores - 1
    if finish_ms > detect_ms:
        return dataclasses.replace(plan, detector_threads=1, classifier_threads=spare)
    return dataclasses.replace(plan, detector_threads=spare, classifier_threads=1)


def set_opencv_threads(threads: int) -> None:
    """OpenCV's own thread pool, process-wide: 1 runs every cv2 call sequentially on the
    calling thread."""
    import cv2  # the plan is readable without OpenCV

    cv2.setNumThreads(max(1, threads))


def thread_cpu_s() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) used so far by each live thread of this process, by
    native thread id, with the Python thread's name (native pools: "native: <comm>").
    Linux only; {} elsewhere. Threads that ended are missing: compare the total with
    `os.times()` to see them."""
    task = Path("/proc/self/task")
    if not task.is_dir():
        return {}
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in task.iterdir():
        try:
            stat = (entry / "stat").read_text()
            comm = (entry / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        tid = int(entry.name)
        found[tid] = (names.get(tid, f"native: {comm}"), cpu)
    return found


def process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class CpuMeter:
    """CPU per thread over a stretch of work: `with CpuMeter() as meter: ...`, then
    `meter.report(wall_s)`: each thread's share of one core, busiest first, and the
    process total (threads that ended inside the stretch count in the total only)."""

    def __enter__(self) -> CpuMeter:
        self.before = thread_cpu_s()
        self.total_before = process_cpu_s()
        return self

    def __exit__(self, *_: object) -> None:
        self.after = thread_cpu_s()
        self.total_s = process_cpu_s() - self.total_before

    def per_thread_s(self) -> list[tuple[str, float]]:
        used = []
        for tid, (name, cpu) in self.after.items():
            spent = cpu - self.before.get(tid, (name, 0.0))[1]
            if spent > 0:
                used.append((name, spent))
        return sorted(used, key=lambda item: -item[1])

    def report(self, wall_s: float, frames: int = 0) -> dict:
        """Shares of one core over `wall_s`; with `frames`, also CPU ms per frame, which
        a loaded machine changes much less than the shares: the work, not the wait."""
        wall = max(wall_s, 1e-9)
        per_frame = (lambda s: round(s * 1e3 / frames, 3)) if frames else (lambda s: None)
        out: dict = {
            "process_pct": round(100 * self.total_s / wall, 1),
            "threads": [
                {
                    "thread": name,
                    "cpu_pct": round(100 * spent / wall, 1),
                    **({"cpu_ms_per_frame": per_frame(spent)} if frames else {}),
                }
                for name, spent in self.per_thread_s()
            ],
        }
        if frames:
            out["cpu_ms_per_frame"] = per_frame(self.total_s)
        return out
