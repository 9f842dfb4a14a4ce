#!/usr/bin/env python3
"""Benchmark the real pipeline on every frame of a video (see appliance/offline/bench.py).

Run pinned to one core for the figures in BENCHMARKS.md:
    taskset -c 0 python tools/bench.py --source appliance/data/demo_faces.mp4 --peer --json
    taskset -c 0 python tools/bench.py --model models/emotion_cnn_int8.json   # one model
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.offline.bench import format_report, run_bench


def bench_model(card_path: str, threads: int, runs: int = 2000) -> dict:
    """Per-face latency of one emotion model: prepared input -> probabilities."""
    from appliance.vision.emotion import EmotionClassifier
    from appliance.vision.model_card import load_card
    from appliance.vision.preprocess import prepare_face
    from appliance.vision.va_regressor import VARegressor

    card = load_card(card_path)
    if card.task == "va":
        infer = VARegressor(card, threads=threads).predict_input
    else:
        infer = EmotionClassifier(card, threads=threads).classify_input
    face = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    x = prepare_face(face, card)
    for _ in range(50):
        infer(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        infer(x)
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
    parser.add_argument("--peer", action="store_true", help="also run the fer package's pipeline")
    parser.add_argument("--model", help="time only this model card (emotion or VA), per face")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.model:
        print(json.dumps(bench_model(args.model, args.threads), indent=None if args.json else 1))
        return 0
    report = run_bench(args.source, threads=args.threads, peer=args.peer, overrides=args.overrides)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
