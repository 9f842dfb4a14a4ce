#!/usr/bin/env python3
"""Benchmark the real pipeline on every frame of a video (see appliance/offline/bench.py).

The figures in BENCHMARKS.md (its "Cores" section has the full block):
    taskset -c 0 python tools/bench.py --source appliance/data/demo_faces.mp4 --threads 1 --peer
    taskset -c 0,1 python tools/bench.py --source appliance/data/demo_faces.mp4 --threads 2 --peer
    taskset -c 0 python tools/bench.py --model models/emotion_cnn_int8.json   # one model
    python tools/bench.py --model models/va_mobilenetv3_int8.json --threads 2  # its threads
    python tools/bench.py --va-beside          # the VA model beside the emotion CNN

`--threads N` is N cores in every pool of both pipelines (TFLite, OpenCV, the overlap of
our stages); `auto` is what the daemon's default does: the CPUs of the affinity mask.
`--overlap`, `--detector-threads` and `--classifier-threads` replace one choice of our
core plan, to measure the alternatives to what the daemon does (the per-model rule and
the cards' "threads" still cap the TFLite threads: `--model` measures a model uncapped).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.common.cores import CpuMeter, set_opencv_threads
from appliance.offline.bench import format_report, run_bench, stats
from appliance.vision import runtime

RUNTIMES = ("ai_edge_litert", "tflite_runtime")


def use_runtime(name: str) -> None:
    """Run the models on this TFLite package (both are installed in the dev venv): the
    profile of tflite-runtime 2.14 is how the VA model's 7x with two threads was found."""
    module = __import__(f"{name}.interpreter", fromlist=["Interpreter"])
    runtime.interpreter_class = lambda: module.Interpreter
    runtime.delegation.cache_clear()


def threads_arg(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if not 1 <= value <= 8:
        raise argparse.ArgumentTypeError("expected auto or 1..8")
    return value


def face_images(folder: str, count: int = 500) -> list[np.ndarray]:
    """Up to `count` images of a folder (searched recursively, evenly spaced in name
    order): a cascade's time depends on the faces it sees, so it is timed on real ones."""
    import cv2

    paths = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if not paths:
        raise SystemExit(f"{folder}: no .jpg or .png images")
    picks = paths[:: max(1, len(paths) // count)][:count]
    images = [image for image in (cv2.imread(str(p)) for p in picks) if image is not None]
    if not images:
        raise SystemExit(f"{folder}: none of its images could be read")
    return images


def bench_model(
    card_path: str, threads: int, runs: int = 2000, faces: list[np.ndarray] | None = None
) -> dict:
    """Per-face latency of one model on exactly `threads` TFLite threads (the card's
    choice and the code's rule are what is being measured, so neither applies here):
    prepared input -> output, with how much of its graph XNNPACK runs. Without `faces`,
    one random image is the input every time."""
    from appliance.vision.blazeface import BlazeFaceDetector
    from appliance.vision.emotion import EmotionClassifier
    from appliance.vision.model_card import load_card, members_of
    from appliance.vision.preprocess import prepare_face
    from appliance.vision.va_regressor import VARegressor

    set_opencv_threads(1)
    card = load_card(card_path)
    face = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    faces = faces or [face]
    face = faces[0]
    members_run: list[int] = []
    views_run: list[int] = []

    def cycled(inputs: list) -> list:
        return [inputs[i % len(inputs)] for i in range(runs)]

    if card.task == "va":
        model = VARegressor(card, threads=threads)
        infer, tflites = model.predict_input, (model.model,)
        samples = cycled([prepare_face(image, card) for image in faces])
        prepare = partial(prepare_face, face, card)
    elif card.task == "face_detection":
        detector = BlazeFaceDetector(card, threads=threads)
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        infer, tflites, prepare, samples = detector.detect, (detector.model,), None, [frame] * runs
    else:  # an emotion model or ensemble: its members (a cascade's, as far as it goes),
        # every view the card asks for
        classifier = EmotionClassifier(card, threads=threads)

        def infer(x: dict) -> None:
            classifier.classify_prepared(x)
            members_run.append(classifier.members_run)
            views_run.append(classifier.views_run)

        tflites = classifier.models
        samples = cycled([classifier.prepare(image) for image in faces])
        prepare = partial(classifier.prepare, face)
    for sample in samples[:50]:
        infer(sample)
    members_run.clear()
    views_run.clear()
    times = []
    with CpuMeter() as meter:
        start = time.perf_counter()
        for sample in samples:
            t0 = time.perf_counter()
            infer(sample)
            times.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - start
    prep = []
    if prepare is not None:
        for _ in range(min(runs, 500)):
            t0 = time.perf_counter()
            prepare()
            prep.append((time.perf_counter() - t0) * 1e3)
    graphs = [runtime.delegation_of(tflite._interp) for tflite in tflites]
    return {
        "model": card.name,
        "runtime": runtime.runtime_name(),
        "threads": threads,
        "batch": tflites[0].batch,
        "models": len(tflites),  # an ensemble's members, each invoked once per face
        "faces": len(faces),  # distinct inputs, cycled
        # a cascade's members run per face, on average (an ensemble without one: all)
        "members_run_mean": round(float(np.mean(members_run)), 3) if members_run else None,
        # views (a member on the face or its mirror image) per face, on average
        "views_run_mean": round(float(np.mean(views_run)), 3) if views_run else None,
        "inference_ms": stats(times),
        "inference_mean_ms": round(float(np.mean(times)), 4),
        "preprocess_ms": stats(prep)["median"] if prep else None,
        "cpu": meter.report(wall),
        "xnnpack": {
            "partitions": sum(graph.partitions for graph in graphs),
            "ops_outside": dict(sum((Counter(graph.outside) for graph in graphs), Counter())),
            "ops": sum(graph.nodes for graph in graphs),
        },
        "card_threads": card.extra.get("threads"),
        "file_size_bytes": sum(m.model_path.stat().st_size for m in members_of(card)),
        "macs": card.extra.get("macs"),
    }


def bench_va_beside(emotion_card: str, va_card: str, runs: int = 2000) -> dict:
    """Per face: the emotion CNN then the VA model on one thread, against the VA model on
    a second thread beside the emotion CNN (the third way to use a second core)."""
    from appliance.vision.emotion import EmotionClassifier
    from appliance.vision.model_card import load_card, load_model_card
    from appliance.vision.preprocess import prepare_face
    from appliance.vision.va_regressor import VARegressor

    emotion = EmotionClassifier(load_card(emotion_card))
    va = VARegressor(load_model_card(va_card))
    face = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    inputs = emotion.prepare(face)
    x = prepare_face(face, va.card)
    go, done = threading.Semaphore(0), threading.Semaphore(0)
    stop = False

    def beside() -> None:
        while True:
            go.acquire()
            if stop:
                return
            va.predict_input(x)
            done.release()

    helper = threading.Thread(target=beside, daemon=True)
    helper.start()

    def in_order() -> None:
        emotion.classify_prepared(inputs)
        va.predict_input(x)

    def side_by_side() -> None:
        go.release()
        emotion.classify_prepared(inputs)
        done.acquire()

    out = {}
    for name, run in (("in_order", in_order), ("va_beside", side_by_side)):
        for _ in range(50):
            run()
        times = []
        with CpuMeter() as meter:
            start = time.perf_counter()
            for _ in range(runs):
                t0 = time.perf_counter()
                run()
                times.append((time.perf_counter() - t0) * 1e3)
            wall = time.perf_counter() - start
        out[name] = {"per_face_ms": stats(times), "cpu": meter.report(wall)}
    stop = True
    go.release()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="demo", help="video file, image folder or 'demo'")
    parser.add_argument(
        "--threads",
        type=threads_arg,
        default=1,
        help="cores for each pipeline, in every pool (TFLite, OpenCV, stage overlap); "
        "auto: the CPUs this process may run on (default 1)",
    )
    parser.add_argument(
        "--overlap",
        choices=("on", "off"),
        help="ours: overlap the stages across frames or not (default: the daemon's plan)",
    )
    parser.add_argument(
        "--detector-threads",
        type=int,
        help="ours: TFLite threads for the face detector (default: the daemon's plan)",
    )
    parser.add_argument(
        "--classifier-threads",
        type=int,
        help="ours: TFLite threads for the emotion CNN and VA model (default: the plan's)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override section.key=value",
    )
    parser.add_argument("--peer", action="store_true", help="also run the fer package's pipeline")
    parser.add_argument("--model", help="time only this model card (emotion, VA or detector)")
    parser.add_argument("--runs", type=int, default=2000, help="--model: invokes to time")
    parser.add_argument("--runtime", choices=RUNTIMES, help="--model: this TFLite package")
    parser.add_argument(
        "--faces",
        help="--model: time on these face images (a folder, e.g. ../shared/data/fer2013/val), "
        "cycled, instead of one random image: a cascade's cost depends on the face",
    )
    parser.add_argument(
        "--va-beside",
        action="store_true",
        help="time the VA model beside the emotion CNN (two threads) against in order",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.runtime:
        use_runtime(args.runtime)
    if args.model or args.va_beside:
        threads = 1 if args.threads == "auto" else args.threads
        if args.model:
            faces = face_images(args.faces) if args.faces else None
            result = bench_model(args.model, threads, args.runs, faces)
        else:
            models = Path(__file__).resolve().parent.parent / "models"
            result = bench_va_beside(
                str(models / "emotion_ensemble_int8.json"),
                str(models / "va_mobilenetv3_int8.json"),
                args.runs,
            )
        print(json.dumps(result, indent=None if args.json else 1))
        return 0
    plan: dict = {}
    if args.overlap:
        plan["overlap"] = args.overlap == "on"
    if args.detector_threads:
        plan["detector_threads"] = args.detector_threads
    if args.classifier_threads:
        plan["classifier_threads"] = args.classifier_threads
    report = run_bench(
        args.source,
        threads=args.threads,
        peer=args.peer,
        overrides=args.overrides,
        plan=plan,
    )
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
