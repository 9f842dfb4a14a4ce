"""Measured speed: the real pipeline on every frame of a video, and optionally the `fer`
package's default pipeline (the peer) on the same frames in the same process.

    emotion-appliance bench --source VIDEO [--threads N|auto] [--peer] --json
    taskset -c 0 python tools/bench.py --source appliance/data/demo_faces.mp4 --threads 1 --peer

Frames are decoded up front (decode time is its own stage) so both pipelines see
identical frames. Cold start and RSS come from a fresh child process that loads the
models and streams the video as the daemon would, so the in-memory frames of this
process do not inflate them.

`--threads N` is N cores for each pipeline, in every pool it has: ours spends them as the
daemon does (appliance/common/cores.py: TFLite threads per model, OpenCV's threads,
stages overlapped across frames), the peer runs its Haar cascade on N OpenCV threads and
its model on N TFLite threads. The report states each pool, and the CPU each thread used
(`cpu`), so "1 thread" can be checked: one thread busy, the others idle. numpy's OpenBLAS
pool is idle on both paths (no BLAS call), which the per-thread CPU shows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.capture import CaptureError, Frame, open_source
from appliance.common.cores import (
    CorePlan,
    CpuMeter,
    available_cores,
    plan_cores,
    set_opencv_threads,
)
from appliance.common.redact import redact
from appliance.config import Config, load_config
from appliance.pipeline import FrameResult, Pipeline, models_dir
from appliance.service.stages import FrameStages
from appliance.vision.emotion import EmotionClassifier
from appliance.vision.model_card import load_card, resolve_card
from appliance.vision.runtime import runtime_name

PEER_CARD = "fer_baseline"
NO_CONFIG = "/nonexistent/config.toml"  # default_path that means built-in defaults
FER_OFFSET_PX, FER_PADDING_PX = 10, 40  # fer.FER.detect_emotions' crop around a face


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p95": 0.0}
    return {
        "median": round(float(np.median(values)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
    }


def decode(source: str) -> tuple[list[Frame], list[float]]:
    """Every frame of a recording, in memory. A live camera never ends, so it is refused
    before it is opened; a source that yields nothing is a CaptureError."""
    frames, decode_ms = [], []
    src = open_source(source)
    if src.live:
        raise CaptureError(
            f"bench decodes its whole source up front, so it needs a video file, an image "
            f"folder or 'demo', not a live camera ({redact(source)}); record a clip first"
        )
    with src:
        while True:
            start = time.perf_counter()
            frame = src.read()
            if frame is None:
                break
            decode_ms.append((time.perf_counter() - start) * 1e3)
            frames.append(frame)
    if not frames:
        raise CaptureError(f"{redact(source)}: no frames to benchmark")
    return frames, decode_ms


def bench_ours(
    config: Config, frames: list[Frame], warmup: int = 10, plan: CorePlan | None = None
) -> dict:
    """The daemon's frame loop on every frame, flat out: its pipeline and core plan (the
    plan of models.threads, or `plan`), one stage after the other or overlapped across
    frames as the daemon runs them (service/stages.py). Latency is per frame, from the
    start of its detection to its smoothed state, hand-off wait included."""
    pipeline = Pipeline.from_config(config, plan)
    for frame in frames[:warmup]:
        pipeline.process(frame)
    pipeline.reset()
    pipeline = Pipeline(pipeline.finder, pipeline.classifier, config, pipeline.va, pipeline.plan)
    results: list[FrameResult] = []
    stages = FrameStages(
        pipeline, lambda frame, result: results.append(result), overlap=pipeline.plan.overlap
    )
    if stages.worker is not None:
        stages.worker.start()
    try:
        with CpuMeter() as meter:
            start = time.perf_counter()
            for frame in frames:
                stages.submit(frame)
            stages.settle()
            wall = time.perf_counter() - start
    finally:
        if stages.worker is not None:
            stages.worker.stop()
    per_stage: dict[str, list[float]] = {}
    for result in results:
        for name, ms in result.latency_ms.items():
            per_stage.setdefault(name, []).append(ms)
        if stages.overlap:  # waiting for the worker to be done with the frame before
            parts = sum(v for k, v in result.latency_ms.items() if k != "total")
            per_stage.setdefault("handoff", []).append(result.latency_ms["total"] - parts)
    total = stats(per_stage["total"])
    macs = {
        "emotion": pipeline.classifier.card.extra.get("macs"),
        "va": pipeline.va.model.card.extra.get("macs") if pipeline.va.model else None,
    }
    return {
        "fps": round(len(frames) / wall, 1),
        "detection_rate": round(sum(bool(r.faces) for r in results) / len(frames), 4),
        "median_ms": total["median"],
        "p95_ms": total["p95"],
        "stages": {name: stats(values) for name, values in per_stage.items()},
        "threads": pipeline.cores(),
        "cpu": meter.report(wall, len(frames)),
        "models": pipeline.describe(),
        "macs": macs,
    }


@dataclass
class PeerPipeline:
    """The `fer` package's default path: OpenCV Haar (scaleFactor 1.1, minNeighbors 5,
    min face 50 px) on the gray frame, then its quantised 64x64 model on each face, cropped
    as fer does (square box + 10 px offset + 40 px padding). No TensorFlow: the same
    .tflite runs in our runtime."""

    cascade: cv2.CascadeClassifier
    classifier: EmotionClassifier

    @classmethod
    def load(cls, models: Any, threads: int = 1) -> PeerPipeline:
        cascade = cv2.CascadeClassifier(
            cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        )
        card = load_card(resolve_card(PEER_CARD, models))
        return cls(cascade, EmotionClassifier(card, threads=threads))

    def process(self, image: np.ndarray) -> int:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        faces = self.cascade.detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50)
        )
        padded = cv2.copyMakeBorder(gray, *(4 * [FER_PADDING_PX]), cv2.BORDER_CONSTANT, value=0)
        for x, y, w, h in faces:
            side = max(w, h)
            cx, cy = x + w // 2, y + h // 2
            half = side // 2 + FER_OFFSET_PX + FER_PADDING_PX
            x0, y0 = cx - half + FER_PADDING_PX, cy - half + FER_PADDING_PX
            crop = padded[max(0, y0) : y0 + 2 * half, max(0, x0) : x0 + 2 * half]
            self.classifier.classify(crop)
        return len(faces)


def bench_peer(frames: list[Frame], models: Any, threads: int = 1, warmup: int = 10) -> dict:
    """The peer on as many threads as ours has cores, in every pool it has: OpenCV's (its
    Haar cascade runs on them, as fer's does by default on every core) and TFLite's. With
    1, one thread does all of it."""
    set_opencv_threads(threads)
    peer = PeerPipeline.load(models, threads)
    for frame in frames[:warmup]:
        peer.process(frame.image)
    times, with_face = [], 0
    with CpuMeter() as meter:
        start = time.perf_counter()
        for frame in frames:
            t0 = time.perf_counter()
            with_face += peer.process(frame.image) > 0
            times.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - start
    return {
        "fps": round(len(frames) / wall, 1),
        "detection_rate": round(with_face / len(frames), 4),
        "median_ms": stats(times)["median"],
        "p95_ms": stats(times)["p95"],
        "pipeline": "fer default: Haar 1.1/5/50px + fer_emotion_quantized.tflite 64x64",
        "threads": threads,
        "pools": {"opencv_threads": cv2.getNumThreads(), "tflite_threads": threads},
        "cpu": meter.report(wall, len(frames)),
    }


COLD_START_PROBE = """
import json, resource, sys, time
from appliance.capture import open_source
from appliance.config import load_config
from appliance.pipeline import Pipeline
config = load_config(sys.argv[3] or None, json.loads(sys.argv[2]), default_path=sys.argv[4])
pipeline = Pipeline.from_config(config)
first = None
with open_source(sys.argv[1]) as source:
    for frame in source:
        pipeline.process(frame)
        if first is None:
            first = time.time()  # wall clock: the parent compares with its spawn time
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"first_inference_at": first, "rss_mb": round(peak_kb / 1024, 1)}))
"""


def cold_start_and_rss(
    source: str,
    overrides: list[str],
    config_path: str | Path | None = None,
    default_path: str | Path = NO_CONFIG,
) -> dict:
    """A fresh interpreter: import, load models, first inference; then peak RSS after
    streaming the whole video (the daemon's steady state), with the same config."""
    spawned = time.time()
    probe_args = [source, json.dumps(overrides), str(config_path or ""), str(default_path)]
    out = subprocess.run(
        [sys.executable, "-c", COLD_START_PROBE, *probe_args],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "cold_start_s": round(probe["first_inference_at"] - spawned, 3),  # incl. interpreter
        "rss_mb": probe["rss_mb"],
    }


def run_bench(
    source: str,
    *,
    threads: int | str | None = None,
    peer: bool = False,
    overrides: Sequence[str] = (),
    config_path: str | Path | None = None,
    default_path: str | Path = NO_CONFIG,
    plan: dict[str, Any] | None = None,
) -> dict:
    """Benchmark with the config the daemon would load (`config_path`, else
    `default_path` if it exists; the default NO_CONFIG means built-in defaults), then
    `threads` (None: the config's models.threads), then `overrides`. The report's
    `threads` is the cores that models.threads gives (auto: this process's affinity
    mask): ours spends them as the daemon does (`ours.threads`), the peer gets that many
    in each of its pools (`peer.pools`). `plan` replaces fields of ours' core plan
    (overlap, detector_threads, ...) to measure the alternatives."""
    overrides = [
        *([f"models.threads={threads}"] if threads is not None else []),
        "music.enabled=false",
        *overrides,
    ]
    config = load_config(config_path, overrides, default_path=default_path)
    cores = plan_cores(config.models.threads)
    if plan:
        cores = dataclasses.replace(cores, **plan)
    frames, decode_ms = decode(source)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    # no replaced field: the daemon's own choice (from 4 cores, it times the stages)
    ours = bench_ours(config, frames, plan=cores if plan else None)
    ours["stages"] = {"decode": stats(decode_ms), **ours["stages"]}
    ours.update(cold_start_and_rss(source, overrides, config_path, default_path))
    used = Path(default_path if config_path is None else config_path)
    report: dict[str, Any] = {
        "source": source,
        "config": str(used) if used.is_file() else "built-in defaults",
        "frames": len(frames),
        "frame_size": list(frames[0].image.shape[1::-1]),
        "threads": cores.cores,
        "threads_setting": config.models.threads,
        "cpus_allowed": available_cores(),
        "runtime": runtime_name(),
        "ours": ours,
    }
    if peer:
        report["peer"] = bench_peer(frames, models_dir(config), cores.cores)
        report["ratio_fps"] = round(ours["fps"] / report["peer"]["fps"], 2)
    if load_before is not None:  # the machine's load: 1-minute average, before and after
        report["load_average"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    report["bench_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return report


def format_cpu(cpu: dict) -> str:
    """CPU share of one core and CPU ms per frame, in all and per thread (the busiest)."""
    threads = ", ".join(
        f"{t['thread']} {t['cpu_pct']}%"
        + (f" = {t['cpu_ms_per_frame']} ms/frame" if t.get("cpu_ms_per_frame") else "")
        for t in cpu["threads"][:4]
    )
    per_frame = f", {cpu['cpu_ms_per_frame']} ms CPU per frame" if "cpu_ms_per_frame" in cpu else ""
    return f"CPU {cpu['process_pct']}% of one core{per_frame} ({threads or 'no thread measured'})"


def format_report(report: dict) -> str:
    ours = report["ours"]
    plan = ours["threads"]
    load = report.get("load_average")
    lines = [
        f"{report['frames']} frames {report['frame_size']}, {report['threads']} core(s) "
        f"(models.threads = {report['threads_setting']}; {report['cpus_allowed']} CPUs allowed"
        f"{f', load {load[0]}-{load[1]}' if load else ''}), {report['runtime']}, "
        f"config: {report['config']}",
        f"ours: {ours['fps']} fps, median {ours['median_ms']} ms, p95 {ours['p95_ms']} ms, "
        f"faces in {100 * ours['detection_rate']:.1f}%, RSS {ours['rss_mb']} MB, "
        f"cold start {ours['cold_start_s']} s",
        f"  frame loop on {plan['frame_loop']} core(s), stages "
        f"{'overlapped' if plan['overlap'] else 'in order'}, TFLite threads "
        + ", ".join(f"{k} {v}" for k, v in plan["tflite_threads"].items())
        + f", OpenCV threads {plan['opencv_threads']}",
        f"  {format_cpu(ours['cpu'])}",
    ]
    for name, s in ours["stages"].items():
        lines.append(f"  {name:<9} median {s['median']:.3f} ms  p95 {s['p95']:.3f} ms")
    if "peer" in report:
        peer = report["peer"]
        lines += [
            f"peer (fer defaults): {peer['fps']} fps, median {peer['median_ms']} ms, "
            f"p95 {peer['p95_ms']} ms, "
            f"faces in {100 * peer['detection_rate']:.1f}%  -> ours/peer {report['ratio_fps']}x",
            f"  OpenCV threads {peer['pools']['opencv_threads']}, TFLite threads "
            f"{peer['pools']['tflite_threads']}; {format_cpu(peer['cpu'])}",
        ]
    return "\n".join(lines)
