#!/usr/bin/env python3
"""Benchmark the real pipeline on every frame of a video: per-stage latency and fps.

Run pinned to one core for the figures in the README/closing notes:
    taskset -c 0 python tools/bench.py --source appliance/data/demo_faces.mp4 --json
Frames are decoded up front so decode time does not count against the pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.capture import open_source
from appliance.config import load_config
from appliance.pipeline import Pipeline


def run(source: str, overrides: list[str], warmup: int = 10) -> dict:
    config = load_config(None, overrides, default_path="/nonexistent/config.toml")
    t0 = time.perf_counter()
    pipeline = Pipeline.from_config(config)
    load_s = time.perf_counter() - t0
    with open_source(source) as src:
        frames = list(src)
    for frame in frames[:warmup]:
        pipeline.process(frame)
    pipeline = Pipeline.from_config(config)  # fresh tracker/smoother state for the timed pass
    stages: dict[str, list[float]] = {}
    with_face = 0
    start = time.perf_counter()
    for frame in frames:
        result = pipeline.process(frame)
        with_face += bool(result.faces)
        for name, ms in result.latency_ms.items():
            stages.setdefault(name, []).append(ms)
    wall = time.perf_counter() - start

    def summary(values: list[float]) -> dict:
        return {
            "median": round(float(np.median(values)), 3),
            "p95": round(float(np.percentile(values, 95)), 3),
        }

    return {
        "source": source,
        "frames": len(frames),
        "frame_size": list(frames[0].image.shape[1::-1]) if frames else None,
        "fps": round(len(frames) / wall, 1),
        "detection_rate": round(with_face / len(frames), 4),
        "median_ms": summary(stages["total"])["median"],
        "p95_ms": summary(stages["total"])["p95"],
        "stages": {name: summary(values) for name, values in stages.items()},
        "model_load_s": round(load_s, 3),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "models": pipeline.describe(),
    }


def bench_model(card_path: str, threads: int, runs: int = 2000) -> dict:
    """Per-face latency of one emotion model: prepared input -> probabilities."""
    from appliance.vision.emotion import EmotionClassifier
    from appliance.vision.model_card import load_card
    from appliance.vision.preprocess import prepare_face

    card = load_card(card_path)
    classifier = EmotionClassifier(card, threads=threads)
    face = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    x = prepare_face(face, card)
    for _ in range(50):
        classifier.classify_input(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        classifier.classify_input(x)
        times.append((time.perf_counter() - start) * 1e3)
    prep = []
    for _ in range(runs):
        start = time.perf_counter()
        prepare_face(face, card)
        prep.append((time.perf_counter() - start) * 1e3)
    return {
        "model": card.name,
        "threads": threads,
        "inference_ms": {
            "median": round(float(np.median(times)), 3),
            "p95": round(float(np.percentile(times, 95)), 3),
        },
        "preprocess_ms": {"median": round(float(np.median(prep)), 3)},
        "file_size_bytes": card.model_path.stat().st_size,
        "macs": card.extra.get("macs"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="demo", help="video file, image folder or 'demo'")
    parser.add_argument("--threads", type=int, default=1, help="TFLite threads")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override section.key=value",
    )
    parser.add_argument("--model", help="time only this emotion model card, per face")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.model:
        print(json.dumps(bench_model(args.model, args.threads), indent=None if args.json else 1))
        return 0
    report = run(args.source, [f"models.threads={args.threads}", *args.overrides])
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(
            f"{report['frames']} frames {report['frame_size']}: {report['fps']} fps, "
            f"median {report['median_ms']} ms, p95 {report['p95_ms']} ms, "
            f"faces in {100 * report['detection_rate']:.1f}%"
        )
        for name, s in report["stages"].items():
            print(f"  {name:<9} median {s['median']:.3f} ms  p95 {s['p95']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
