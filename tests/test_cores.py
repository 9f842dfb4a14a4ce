"""Every core the daemon is given (issue 27): models.threads = auto from the affinity
mask, the core plan, the per-model TFLite thread rule, and the frame loop's two stages
overlapped through a one-slot hand-off. Behaviour only: fake stages gated by events, no
timing thresholds."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import MODELS, ROOT, requires_models

from appliance.affect.smoothing import AffectState
from appliance.capture.base import Frame
from appliance.common import cores
from appliance.common.cores import give_spare_threads, plan_cores, resolve_cores
from appliance.config import ConfigError, load_config
from appliance.pipeline import FrameResult, Pipeline, model_threads
from appliance.service.daemon import Daemon
from appliance.service.stages import FrameStages
from appliance.vision.model_card import load_card
from appliance.vision.runtime import delegation, threads_that_pay

# ------------------------------------------------------------------------ the setting


def defaults(*overrides: str):
    return load_config(None, list(overrides), default_path="/nonexistent/config.toml")


def test_threads_default_to_auto_and_take_an_integer_from_a_file_or_set(tmp_path):
    assert defaults().models.threads == "auto"
    path = tmp_path / "config.toml"
    path.write_text("[models]\nthreads = 2\n")  # a file written before "auto" existed
    assert load_config(path).models.threads == "2"
    assert defaults("models.threads=3").models.threads == "3"
    assert defaults("models.threads=auto").models.threads == "auto"


@pytest.mark.parametrize("text", ["0", "9", '"two"', "2.0", "true", '"Auto"'])
def test_threads_refuse_what_is_neither_auto_nor_1_to_8(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(f"[models]\nthreads = {text}\n")
    with pytest.raises(ConfigError, match=r'threads: expected "auto" or an integer 1\.\.8'):
        load_config(path)


def test_auto_is_the_cpus_of_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 2, 5, 7}, raising=False)
    assert resolve_cores("auto") == 4
    assert resolve_cores("2") == 2 and resolve_cores(3) == 3


@pytest.mark.skipif(not hasattr(cores.os, "sched_setaffinity"), reason="Linux only")
def test_auto_honours_taskset_in_a_real_process():
    """What `taskset -c 0` or systemd's CPUAffinity=0 does to the process."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from appliance.common.cores import plan_cores; import json; "
        "print(json.dumps(plan_cores('auto').describe()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    plan = json.loads(out.stdout)
    assert plan["cores"] == 1 and plan["overlap"] is False


def test_the_plan_one_core_in_order_two_overlapped_more_keep_one_for_the_rest():
    one = plan_cores(1)
    assert (one.loop_cores, one.overlap, one.detector_threads, one.classifier_threads) == (
        1,
        False,
        1,
        1,
    )
    assert one.opencv_threads == 1
    two = plan_cores(2)
    assert (two.loop_cores, two.overlap, two.detector_threads, two.classifier_threads) == (
        2,
        True,
        1,
        1,
    )
    four = plan_cores(4)  # a Pi 4: three for the frame loop, one for the other threads
    assert (four.loop_cores, four.overlap, four.detector_threads, four.classifier_threads) == (
        3,
        True,
        2,
        1,
    )
    for n in range(1, 9):  # busy threads of the frame loop never exceed its share
        plan = plan_cores(n)
        busy = plan.detector_threads + (plan.classifier_threads if plan.overlap else 0)
        assert busy <= plan.loop_cores <= n


def test_spare_cores_go_to_the_stage_that_is_slower_on_this_machine():
    """Three frame-loop cores or more: the threads beyond the two stages' own go to the
    slower stage's models (on x86 with AMX the detector, on a Pi's NEON the emotion CNN
    with its mirrored view); with two, each stage has its core and nothing to spare."""
    four = plan_cores(4)
    pi = give_spare_threads(four, detect_ms=12.0, finish_ms=30.0)
    assert (pi.detector_threads, pi.classifier_threads) == (1, 2)
    x86 = give_spare_threads(four, detect_ms=1.2, finish_ms=0.9)
    assert (x86.detector_threads, x86.classifier_threads) == (2, 1)
    assert give_spare_threads(plan_cores(2), 1.0, 9.0) == plan_cores(2)
    assert give_spare_threads(plan_cores(1), 1.0, 9.0) == plan_cores(1)


@requires_models
def test_the_pipeline_times_its_stages_only_when_there_are_spare_cores(monkeypatch):
    timed: list[int] = []

    def stage_ms(config):
        timed.append(1)
        return 1.0, 5.0  # the finishing stage is the slower: it gets the spare thread

    monkeypatch.setattr(Pipeline, "_stage_ms", staticmethod(stage_ms))
    two = Pipeline.from_config(defaults("models.threads=2", "music.enabled=false"))
    assert timed == [] and two.cores()["tflite_threads"] == {"detector": 1, "emotion": 1, "va": 1}
    four = Pipeline.from_config(defaults("models.threads=4", "music.enabled=false"))
    assert timed == [1]
    # the emotion CNN takes its stage's two threads; the VA model, in pieces, keeps one
    assert four.cores()["tflite_threads"] == {"detector": 1, "emotion": 2, "va": 1}
    assert four.cores()["frame_loop"] == 3 and four.cores()["overlap"] is True


def test_with_haar_finding_the_faces_opencv_gets_the_frame_loops_cores(tmp_path):
    """BlazeFace missing: OpenCV's Haar cascade is the detector, ~20x the rest of the
    frame, so OpenCV's pool gets the frame loop's cores; with one core, one thread."""
    import cv2

    before = cv2.getNumThreads()
    try:
        for threads, expected in (("1", 1), ("2", 2)):
            pipeline = Pipeline.from_config(
                defaults(f"models.threads={threads}", "models.detector=absent_detector")
            )
            assert pipeline.describe()["detector"] == "haar"
            assert pipeline.cores()["opencv_threads"] == expected == cv2.getNumThreads()
    finally:
        cv2.setNumThreads(before)


# ------------------------------------------------------------------------ per model

VA_CARD = MODELS / "va_mobilenetv3_int8.json"
EMOTION_CARD = MODELS / "emotion_cnn_int8.json"


def test_a_model_xnnpack_runs_in_pieces_gets_one_thread_and_the_card_overrides():
    """The VA model's int8 HARD_SWISH ops stay outside XNNPACK, cutting it into 19
    partitions: threads only wait there. The emotion CNN is one partition."""
    va = delegation(str(load_card(VA_CARD).model_path))
    assert va.partitions > 1 and va.outside.get("HARD_SWISH")
    threads, why = threads_that_pay(load_card(VA_CARD).model_path, 2)
    assert threads == 1 and "HARD_SWISH" in why
    emotion = load_card(EMOTION_CARD)
    assert delegation(str(emotion.model_path)).whole
    assert threads_that_pay(emotion.model_path, 2) == (2, "whole graph in XNNPACK")
    assert threads_that_pay(emotion.model_path, 1)[0] == 1  # one given: one, nothing read
    assert threads_that_pay(load_card(VA_CARD).model_path, 3, best=2)[0] == 2  # card wins
    assert threads_that_pay(emotion.model_path, 4, best=1)[0] == 1
    assert threads_that_pay(emotion.model_path, 2, best=4)[0] == 2  # never above its share


def test_the_card_field_caps_a_models_threads(tmp_path):
    raw = json.loads(EMOTION_CARD.read_text())
    raw["file"] = str(EMOTION_CARD.parent / raw["file"])
    for best, expected in ((1, 1), (2, 2), ("x", 2)):  # "x": ignored, the rule decides
        raw["threads"] = {"best": best, "measured": {"1": 0.2, "2": 0.2}}
        path = tmp_path / f"card_{best}.json"
        path.write_text(json.dumps(raw))
        assert model_threads(load_card(path), 2) == expected


# ------------------------------------------------------------------------ the two stages


class FakeStages:
    """A two-stage pipeline that records what the frame loop and the worker do; a
    frame's finish waits for its gate when one is set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.detected: list[int] = []
        self.delivered: list[int] = []
        self.in_flight_at_detect: list[int] = []  # frames handed over, not yet delivered
        self.undelivered_before_finish: list[int] = []
        self.gates: dict[int, threading.Event] = {}
        self.finishing: dict[int, threading.Event] = {}
        self.detecting: dict[int, threading.Event] = {}
        self.threads: dict[str, set[str]] = {"detect": set(), "finish": set()}
        self.fail_at: int | None = None

    def detect(self, frame: Frame) -> tuple[Frame, int]:
        with self.lock:
            self.threads["detect"].add(threading.current_thread().name)
            handed = len(self.detected)
            self.in_flight_at_detect.append(handed - len(self.delivered))
            self.detected.append(frame.index)
            self.detecting.setdefault(frame.index, threading.Event()).set()
        return frame, frame.index

    def finish(self, job) -> FrameResult:
        frame, index = job
        self.threads["finish"].add(threading.current_thread().name)
        with self.lock:
            self.undelivered_before_finish.append(index - len(self.delivered))
        self.finishing.setdefault(index, threading.Event()).set()
        if index in self.gates:
            assert self.gates[index].wait(30)
        if index == self.fail_at:
            raise ValueError(f"frame {index} failed")
        state = AffectState(
            t=frame.t, emotion="happy", confidence=0.9, face_presence=1.0, probs={"happy": 0.9}
        )
        return FrameResult(index, frame.t, [], state, {"total": 0.1})

    def process(self, frame: Frame) -> FrameResult:
        return self.finish(self.detect(frame))

    def deliver(self, frame: Frame, result: FrameResult) -> None:
        assert frame.index == result.index
        with self.lock:
            self.delivered.append(result.index)


def frames(n: int) -> list[Frame]:
    return [Frame(np.zeros((4, 4, 3), np.uint8), i / 10, i) for i in range(n)]


@pytest.fixture
def overlapped():
    fake = FakeStages()
    stages = FrameStages(fake, fake.deliver, overlap=True)
    stages.worker.start()
    yield fake, stages
    for gate in fake.gates.values():
        gate.set()
    stages.worker.stop()


def test_results_are_delivered_in_frame_order_by_the_one_worker(overlapped):
    fake, stages = overlapped
    for frame in frames(50):
        stages.submit(frame)
    assert stages.settle()
    assert fake.delivered == list(range(50))
    assert fake.threads == {
        "detect": {threading.current_thread().name},
        "finish": {"frames:finish"},
    }


def test_at_most_one_frame_is_in_flight_and_the_next_is_detected_meanwhile(overlapped):
    """Frame 1 is detected while frame 0 is still being finished (the overlap), and is
    handed over only once frame 0 is delivered: nothing queues, so a result is never
    more than one stage behind (the latency bound, by construction)."""
    fake, stages = overlapped
    fake.gates[0] = threading.Event()
    stages.submit(frames(2)[0])
    assert fake.finishing.setdefault(0, threading.Event()).wait(30)
    handed = threading.Event()

    def submit_second() -> None:
        stages.submit(frames(2)[1])
        handed.set()

    loop = threading.Thread(target=submit_second)
    loop.start()
    try:
        # frame 1's detection runs during frame 0's finish ...
        assert fake.detecting.setdefault(1, threading.Event()).wait(30)
        assert not handed.is_set()  # ... but it waits for the slot
        assert fake.delivered == [] and stages.worker.in_flight()
    finally:
        fake.gates[0].set()
        loop.join(30)
    assert handed.is_set()
    assert stages.settle()
    assert fake.delivered == [0, 1]
    for frame in frames(30)[2:]:
        stages.submit(frame)
    assert stages.settle()
    assert max(fake.in_flight_at_detect) <= 1  # at most one frame handed over, undelivered
    assert set(fake.undelivered_before_finish) == {0}  # every earlier frame delivered first


def test_one_core_runs_both_stages_in_order_on_the_calling_thread():
    fake = FakeStages()
    stages = FrameStages(fake, fake.deliver, overlap=False)
    assert stages.worker is None and not stages.overlap
    for frame in frames(5):
        stages.submit(frame)
        assert fake.delivered[-1] == frame.index  # delivered before submit returns
    name = threading.current_thread().name
    assert fake.threads == {"detect": {name}, "finish": {name}}


def test_a_pipeline_without_two_stages_runs_in_order_even_when_overlap_is_asked():
    class Whole:
        def process(self, frame):
            state = AffectState(
                t=frame.t, emotion=None, confidence=1.0, face_presence=0.0, probs={}
            )
            return FrameResult(frame.index, frame.t, [], state, {})

    got: list[int] = []
    stages = FrameStages(Whole(), lambda frame, result: got.append(result.index), overlap=True)
    assert stages.worker is None
    for frame in frames(3):
        stages.submit(frame)
    assert got == [0, 1, 2]


def test_an_error_in_the_worker_is_raised_on_the_frame_loop(overlapped):
    fake, stages = overlapped
    fake.fail_at = 2
    with pytest.raises(RuntimeError, match="frame 2 failed"):
        for frame in frames(10):
            stages.submit(frame)
        stages.settle()
    assert fake.delivered == [0, 1]
    with pytest.raises(RuntimeError, match="not running"):
        stages.submit(frames(11)[10])


def test_a_stop_lets_the_frame_in_flight_finish_and_a_stuck_one_is_reported(overlapped):
    fake, stages = overlapped
    fake.gates[0] = threading.Event()
    stages.submit(frames(1)[0])
    assert fake.finishing.setdefault(0, threading.Event()).wait(30)
    assert stages.settle(timeout=0.05) is False  # stuck: the caller's budget decides
    stages.worker.request_stop()
    fake.gates[0].set()
    assert stages.worker.join_by(30)
    assert fake.delivered == [0]  # the frame in flight was finished and delivered


# ------------------------------------------------------------------------ in the daemon


class StagedPipeline(FakeStages):
    """FakeStages with what the daemon reads of a pipeline."""

    def __init__(self, overlap: bool) -> None:
        super().__init__()
        self.plan = plan_cores(2 if overlap else 1)

    def describe(self) -> dict:
        return {"detector": "fake", "emotion_model": "fake", "labels": ["happy"]}

    def reset(self) -> None:
        pass

    def record(self, result: FrameResult) -> None:
        """The daemon's on_result: called as it delivers a frame."""
        with self.lock:
            self.delivered.append(result.index)


def run_daemon(tmp_path: Path, overlap: bool, n: int = 12) -> tuple[StagedPipeline, list]:
    folder = tmp_path / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((48, 64, 3), 40 + i, np.uint8))
    config = load_config(
        None,
        [
            f"storage.state_dir={tmp_path / 'state'}",
            f"service.runtime_dir={tmp_path / 'run'}",
            "music.enabled=false",
        ],
        default_path="/nonexistent/config.toml",
    )
    pipeline = StagedPipeline(overlap)
    events = tmp_path / f"events_{overlap}.jsonl"
    with events.open("w") as out:
        daemon = Daemon(
            config, source=str(folder), pipeline=pipeline, events=out, on_result=pipeline.record
        )
        assert daemon.run() == 0
    assert daemon.frames == n
    return pipeline, [json.loads(line) for line in events.read_text().splitlines()]


def test_the_daemon_overlaps_its_stages_when_its_plan_says_so_with_the_same_events(tmp_path):
    serial, in_order = run_daemon(tmp_path / "one", overlap=False)
    overlapped, events = run_daemon(tmp_path / "two", overlap=True)
    assert serial.threads["finish"] == {"MainThread"}
    assert overlapped.threads["finish"] == {"frames:finish"}
    assert overlapped.threads["detect"] == {"MainThread"}
    assert [e["frame"] for e in events] == list(range(12))
    assert events == in_order  # the same events, in the same order
    assert max(overlapped.in_flight_at_detect) <= 1


def test_the_daemon_stops_within_its_budget_with_the_last_frame_delivered(tmp_path):
    from appliance.service.status import read_status

    for i in range(3):
        (tmp_path / "frames").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "frames" / f"{i:03d}.png"), np.zeros((8, 8, 3), np.uint8))
    config = load_config(
        None,
        [f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}",
         "music.enabled=false"],
        default_path="/nonexistent/config.toml",
    )  # fmt: skip
    pipeline = StagedPipeline(overlap=True)
    pipeline.gates[1] = threading.Event()
    daemon = Daemon(
        config,
        source=str(tmp_path / "frames"),
        loop=True,
        pipeline=pipeline,
        on_result=pipeline.record,
    )
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    try:
        assert pipeline.finishing.setdefault(1, threading.Event()).wait(30)
        daemon.stop()
    finally:
        pipeline.gates[1].set()
        runner.join(30)
    assert codes == [0] and not runner.is_alive()
    assert pipeline.delivered == sorted(pipeline.delivered)
    assert pipeline.delivered[-1] == pipeline.detected[-1]  # nothing left in flight
    assert read_status(tmp_path / "run")["state"] == "stopped"
