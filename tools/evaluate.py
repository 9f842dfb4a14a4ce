#!/usr/bin/env python3
"""Score an emotion or valence-arousal model on a `<root>/<class>/*.jpg` folder, as the
daemon would run it.

    python tools/evaluate.py --task emotion --data ../shared/data/fer2013/val --json
    python tools/evaluate.py --task emotion --data DIR --model models/fer_baseline.json \\
        --plot confusion.png
    python tools/evaluate.py --task va --data ../shared/data/fer2013/val --json

VA is scored against targets derived from the class folders through the coordinates in
appliance/affect/va.py (the same targets the VA model was trained against), plus the
valence-sign accuracy (happy, surprise positive; angry, disgust, fear, sad negative;
neutral excluded). Given an emotion card with `--task va`, the VA the daemon derives from
its probabilities (the no-VA-model fallback) is scored instead.

Images go through the daemon's own classifier (`EmotionClassifier.classify`: the shared
preprocessing and the same TFLite runtime), so the figures describe what runs on the Pi.
The robustness entries reproduce the seed paper's perturbations, applied to the image
before preprocessing: additive Gaussian noise sigma 50, salt-and-pepper noise with
probability 0.05, and illumination x1.5, each clipped to 0..255. `--realistic` adds what
the model cards quote as realistic conditions (milder noise, a dim room, blur, a 24-px
face); `--calibrate` fits the temperature a card should carry (a view cascade's, one per
stage: `tools/evaluate.py --data ../shared/data/fer2013/val --calibrate`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.affect.va import (  # noqa: E402
    NEGATIVE,
    POSITIVE,
    VA_COORDINATES,
    ProbabilityVA,
    coordinates_for,
)
from appliance.config import ConfigError, load_config  # noqa: E402
from appliance.pipeline import models_dir  # noqa: E402
from appliance.vision.emotion import EmotionClassifier  # noqa: E402
from appliance.vision.model_card import load_card, resolve_card  # noqa: E402
from appliance.vision.runtime import ModelError  # noqa: E402
from appliance.vision.va_regressor import VARegressor  # noqa: E402

log = logging.getLogger("evaluate")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
VA_LABELS = tuple(VA_COORDINATES)  # the classes a VA evaluation folder may hold


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive zero-mean Gaussian noise of standard deviation `sigma` grey levels."""
    noisy = image.astype(np.float64) + rng.normal(0.0, sigma, image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def impulse_noise(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper: each pixel independently becomes 0 or 255 with probability
    `amount` (half each)."""
    out = image.copy()
    hit = rng.random(image.shape) < amount
    salt = rng.random(image.shape) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def illumination(image: np.ndarray, factor: float) -> np.ndarray:
    """Brighter (factor > 1) or darker lighting: every grey level scaled, then clipped."""
    return np.clip(np.round(image.astype(np.float64) * factor), 0, 255).astype(np.uint8)


def perturbations(seed: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "gaussian50": lambda im: gaussian_noise(im, 50.0, rng),
        "impulse0.05": lambda im: impulse_noise(im, 0.05, rng),
        "illum1.5": lambda im: illumination(im, 1.5),
    }


def realistic_perturbations(seed: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """What a Pi camera in a living room does to a face, beyond the seed paper's three:
    milder sensor noise, a dim room (with and without its noise), defocus, a small face."""
    rng = np.random.default_rng(seed)

    def small_face(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        small = cv2.resize(image, (24, 24), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    return {
        "gaussian_sigma10": lambda im: gaussian_noise(im, 10.0, rng),
        "gaussian_sigma20": lambda im: gaussian_noise(im, 20.0, rng),
        "gaussian_sigma30": lambda im: gaussian_noise(im, 30.0, rng),
        "dim0.4": lambda im: illumination(im, 0.4),
        "dim0.4_sigma10": lambda im: gaussian_noise(illumination(im, 0.4), 10.0, rng),
        "blur1.5": lambda im: cv2.GaussianBlur(im, (0, 0), 1.5),
        "face24px": small_face,
    }


def list_images(root: Path, labels: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(path, label index) for every image; a class folder the model lacks is an error."""
    if not root.is_dir():
        raise SystemExit(f"{root}: not a folder of <class>/*.jpg")
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in labels:
            raise SystemExit(
                f"{folder}: class '{folder.name}' is not a label of the model ({', '.join(labels)})"
            )
        index = labels.index(folder.name)
        items += [
            (p, index) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    if not items:
        raise SystemExit(f"{root}: no images found in <class>/ folders")
    return items


def confusion_of(
    classifier: EmotionClassifier,
    images: list[np.ndarray],
    truth: list[int],
    perturb: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    size = len(classifier.labels)
    confusion = np.zeros((size, size), dtype=np.int64)
    for image, label in zip(images, truth, strict=True):
        probs = classifier.classify(perturb(image) if perturb else image)
        confusion[label, int(np.argmax(probs))] += 1
    return confusion


ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """How far the top probability is from the accuracy, averaged over equal-width bins
    of confidence, weighted by how many faces fall in each (Guo et al. 2017)."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def view_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """N x V x C logits (V views: the face, its mirror) -> N x C probabilities, as
    EmotionClassifier combines them: softmax(logits / T) per view, then the mean."""
    z = logits / temperature
    z = np.exp(z - z.max(axis=2, keepdims=True))
    return (z / z.sum(axis=2, keepdims=True)).mean(axis=1)


def negative_log_likelihood(probs: np.ndarray, truth: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, None))))


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature (0.25..8) that minimises the negative log-likelihood of the true
    labels: a log-spaced grid, then a finer one around its best point."""

    def nll(t: float) -> float:
        return negative_log_likelihood(view_probabilities(logits, t), truth)

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    best = int(np.argmin([nll(t) for t in grid]))
    fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 41)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def calibration(logits: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict:
    """Temperature scaling on these faces: the temperature fitted on all of them (what a
    card ships) and the ECE/NLL before (T = 1) and after. Both are cross-fitted: the
    temperature is fitted on one half and both are measured on the other, both ways, so
    "after" does not flatter itself and "before" is measured on the same halves (ECE on
    fewer faces reads higher)."""
    order = np.random.default_rng(seed).permutation(len(truth))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    sums = {"ece_before": 0.0, "ece_after": 0.0, "nll_before": 0.0, "nll_after": 0.0}
    for fit_on, test_on in (halves, halves[::-1]):
        fitted = fit_temperature(logits[fit_on], truth[fit_on])
        for name, t in (("before", 1.0), ("after", fitted)):
            probs = view_probabilities(logits[test_on], t)
            sums[f"ece_{name}"] += expected_calibration_error(probs, truth[test_on]) * len(test_on)
            sums[f"nll_{name}"] += negative_log_likelihood(probs, truth[test_on]) * len(test_on)
    return {
        "temperature": round(fit_temperature(logits, truth), 4),
        **{name: round(total / len(truth), 4) for name, total in sums.items()},
        "bins": ECE_BINS,
        "method": "temperature scaling (Guo et al. 2017), fitted by NLL; ECE and NLL "
        "2-fold cross-fitted (fit on one half, measured on the other)",
    }


def stage_calibration(
    probs: np.ndarray, stages: np.ndarray, truth: np.ndarray, seed: int = 0
) -> dict:
    """A cascade's temperature per stage: fitted on the faces whose cascade stopped at
    that stage (N x C averages before any temperature; `stages` where each stopped),
    with the ECE/NLL before and after cross-fitted as in calibration()."""
    logits = np.log(np.clip(probs, 1e-12, None))[:, None]
    count = int(stages.max()) + 1

    def fitted(on: np.ndarray) -> list[float]:
        # a stage that no face stopped at keeps 1.0: nothing to fit it on
        return [
            fit_temperature(logits[on][stages[on] == k], truth[on][stages[on] == k])
            if np.any(stages[on] == k) else 1.0
            for k in range(count)
        ]  # fmt: skip

    order = np.random.default_rng(seed).permutation(len(truth))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    sums = {"ece_before": 0.0, "ece_after": 0.0, "nll_before": 0.0, "nll_after": 0.0}
    for fit_on, test_on in (halves, halves[::-1]):
        temperatures = np.asarray(fitted(fit_on))
        per_face = temperatures[stages[test_on]][:, None, None]
        for name, t in (("before", 1.0), ("after", per_face)):
            p = view_probabilities(logits[test_on], t)
            sums[f"ece_{name}"] += expected_calibration_error(p, truth[test_on]) * len(test_on)
            sums[f"nll_{name}"] += negative_log_likelihood(p, truth[test_on]) * len(test_on)
    return {
        "stage_temperatures": [round(t, 4) for t in fitted(np.arange(len(truth)))],
        "faces_per_stage": np.bincount(stages, minlength=count).tolist(),
        **{name: round(total / len(truth), 4) for name, total in sums.items()},
        "bins": ECE_BINS,
        "method": "temperature scaling per cascade stage, each fitted by NLL on the faces "
        "that stopped there; ECE and NLL 2-fold cross-fitted (fit on one half, measured "
        "on the other)",
    }


def calibrate(card_path: Path, data: Path, *, seed: int, limit: int = 0) -> dict:
    """The card's calibration on these faces, what its temperature fields should say: a
    view cascade's per stage (its own temperatures set aside), any other card's as
    calibration() fits it on EmotionClassifier.logits."""
    card = load_card(card_path)
    cascade = card.extra.get("cascade")
    if not cascade:
        classifier = EmotionClassifier(card)
        images, truth = load_images(data, classifier.labels, seed=seed, limit=limit)
        return calibration(view_logits(classifier, images), np.asarray(truth), seed)
    plain = [{k: v for k, v in stage.items() if k != "temperature"} for stage in cascade]
    classifier = EmotionClassifier(
        replace(card, extra={**card.extra, "cascade": plain, "temperature": 1.0})
    )
    images, truth = load_images(data, classifier.labels, seed=seed, limit=limit)
    probs, stages = [], []
    for image in images:
        probs.append(classifier.classify(image))
        stages.append(classifier.stages_run - 1)
    return stage_calibration(np.stack(probs), np.asarray(stages), np.asarray(truth), seed)


def view_logits(classifier: EmotionClassifier, images: list[np.ndarray]) -> np.ndarray:
    """N x V x C: what the card's temperature divides (EmotionClassifier.logits), each face
    through the daemon's own preprocessing and runtime (V = 2 with a single model's
    test-time flip; 1 for an ensemble, whose members' average is what gets calibrated)."""
    try:
        return np.stack([classifier.logits(image) for image in images])
    except ModelError as exc:
        raise SystemExit(f"calibration needs logits: {exc}") from exc


def scores(confusion: np.ndarray, labels: tuple[str, ...]) -> dict:
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    precision = confusion.diagonal() / np.maximum(confusion.sum(0), 1)
    f1 = 2 * recall * precision / np.maximum(recall + precision, 1e-12)
    # Macro-F1 over every class that is in the truth or was predicted: a class predicted
    # but absent from the folder scores F1 0, and leaving it out would inflate the mean.
    present = (confusion.sum(0) + confusion.sum(1)) > 0
    return {
        "n": int(confusion.sum()),
        "accuracy": round(float(confusion.trace() / max(confusion.sum(), 1)), 4),
        "macro_f1": round(float(f1[present].mean()), 4) if present.any() else 0.0,
        "per_class": {k: round(float(v), 4) for k, v in zip(labels, recall, strict=True)},
    }


def plot_confusion(confusion: np.ndarray, labels: tuple[str, ...], title: str, out: Path) -> None:
    """Row-normalised confusion matrix as a PNG (OpenCV only; no plotting dependency)."""
    cell, left, top = 64, 110, 70
    size = len(labels)
    image = np.full((top + cell * size + 20, left + cell * size + 20, 3), 255, np.uint8)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (10, 22), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "true \\ predicted", (10, 50), font, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    for i in range(size):
        cv2.putText(
            image,
            labels[i][:8],
            (10, top + i * cell + cell // 2 + 5),
            font,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        cv2.putText(
            image,
            labels[i][:7],
            (left + i * cell + 4, top - 8),
            font,
            0.4,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        for j in range(size):
            shade = int(255 * (1 - rows[i, j]))
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), (200, 200, 200), 1)
            colour = (255, 255, 255) if rows[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(
                image,
                f"{rows[i, j]:.2f}",
                (x0 + 12, y0 + cell // 2 + 5),
                font,
                0.45,
                colour,
                1,
                cv2.LINE_AA,
            )
    if not cv2.imwrite(str(out), image):
        raise SystemExit(f"cannot write {out}")


def default_card(config_path: str | None, overrides: list[str], task: str = "emotion") -> Path:
    """The emotion (or VA) model the daemon is configured to use."""
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from exc
    name = config.models.va if task == "va" and config.models.va else config.models.emotion
    return resolve_card(name, models_dir(config))


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient: agreement, not just correlation."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    denominator = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    if denominator <= 0:
        return 0.0
    return float(2 * np.mean((x - x.mean()) * (y - y.mean())) / denominator)


def va_scores(pred: np.ndarray, target: np.ndarray, classes: list[str]) -> dict:
    """CCC and RMSE per dimension, and valence-sign accuracy over the non-neutral classes."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    truth_sign = np.array([1 if c in POSITIVE else -1 if c in NEGATIVE else 0 for c in classes])
    signed = truth_sign != 0
    hits = np.sign(pred[signed, 0]) == truth_sign[signed]
    return {
        "n": len(pred),
        "ccc_valence": round(ccc(pred[:, 0], target[:, 0]), 4),
        "ccc_arousal": round(ccc(pred[:, 1], target[:, 1]), 4),
        "rmse_valence": round(float(np.sqrt(np.mean((pred[:, 0] - target[:, 0]) ** 2))), 4),
        "rmse_arousal": round(float(np.sqrt(np.mean((pred[:, 1] - target[:, 1]) ** 2))), 4),
        "valence_sign_accuracy": round(float(hits.mean()), 4) if signed.any() else None,
        "valence_sign_n": int(signed.sum()),
    }


def va_predictor(card_path: Path) -> Callable[[np.ndarray], tuple[float, float]]:
    """A VA model, or an emotion model through the coordinates (the daemon's fallback)."""
    card = load_card(card_path)
    if card.task == "va":
        return VARegressor(card).predict
    classifier = EmotionClassifier(card)
    to_va = ProbabilityVA(classifier.labels)
    return lambda image: to_va(classifier.classify(image))


def predict_va(
    predict: Callable[[np.ndarray], tuple[float, float]], images: list[np.ndarray]
) -> np.ndarray:
    return np.array([predict(image) for image in images], dtype=np.float64).reshape(-1, 2)


def load_images(
    data: Path, labels: tuple[str, ...], *, seed: int, limit: int = 0
) -> tuple[list[np.ndarray], list[int]]:
    """Gray images and label indices of a <class>/*.jpg folder (a random `limit` subset)."""
    items = list_images(data, labels)
    if limit:
        picks = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = [items[i] for i in sorted(picks)]
    images, truth = [], []
    for path, label in items:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            log.warning("skipping unreadable %s", path)
            continue
        images.append(image)
        truth.append(label)
    return images, truth


def evaluate_va(card_path: Path, data: Path, *, seed: int, limit: int = 0) -> dict:
    images, truth = load_images(data, VA_LABELS, seed=seed, limit=limit)
    classes = [VA_LABELS[i] for i in truth]
    target = coordinates_for(classes)
    pred = predict_va(va_predictor(card_path), images)
    return {"model": str(card_path), "data": str(data), **va_scores(pred, target, classes)}


def evaluate_emotion(
    card_path: Path,
    data: Path,
    *,
    robustness: bool,
    seed: int,
    limit: int = 0,
    realistic: bool = False,
) -> tuple[dict, np.ndarray, tuple[str, ...]]:
    classifier = EmotionClassifier(load_card(card_path))
    images, truth = load_images(data, classifier.labels, seed=seed, limit=limit)
    confusion = confusion_of(classifier, images, truth)
    report = {
        "model": str(card_path),
        "data": str(data),
        **scores(confusion, classifier.labels),
        "confusion": confusion.tolist(),
        "labels": list(classifier.labels),
    }

    def accuracies(perturbed: dict[str, Callable[[np.ndarray], np.ndarray]]) -> dict:
        return {
            name: scores(confusion_of(classifier, images, truth, fn), classifier.labels)["accuracy"]
            for name, fn in perturbed.items()
        }

    if robustness:
        report["robustness"] = accuracies(perturbations(seed))
    if realistic:
        report["realistic"] = accuracies(realistic_perturbations(seed))
    return report, confusion, classifier.labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["emotion", "va"], default="emotion")
    parser.add_argument("--data", type=Path, required=True, help="folder of <class>/*.jpg")
    parser.add_argument("--model", type=Path, help="model card (default: the configured one)")
    parser.add_argument("--config", help="daemon config to take the default model from")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--plot", type=Path, help="write the confusion matrix as PNG")
    parser.add_argument("--no-robustness", action="store_true", help="skip the perturbations")
    parser.add_argument("--limit", type=int, default=0, help="random subset of N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="emotion: also milder noise, a dim room, defocus and a 24-px face",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="emotion: fit the card's temperature (a view cascade's, per stage) and report "
        "the ECE before and after, instead of the accuracy",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    card = args.model or default_card(args.config, args.overrides, args.task)
    if args.task == "va":
        try:
            report = evaluate_va(card, args.data, seed=args.seed, limit=args.limit)
        except (ModelError, ValueError) as exc:
            log.error("%s", exc)
            return 1
        if args.json:
            print(json.dumps(report))
        else:
            print(
                f"{report['n']} images: CCC valence {report['ccc_valence']:.3f}, "
                f"arousal {report['ccc_arousal']:.3f}; RMSE valence "
                f"{report['rmse_valence']:.3f}, arousal {report['rmse_arousal']:.3f}; "
                f"valence sign accuracy {report['valence_sign_accuracy']}"
            )
        return 0
    if args.calibrate:
        try:
            report = calibrate(card, args.data, seed=args.seed, limit=args.limit)
        except ModelError as exc:
            log.error("%s", exc)
            return 1
        print(json.dumps(report) if args.json else json.dumps(report, indent=2))
        return 0
    try:
        report, confusion, labels = evaluate_emotion(
            card,
            args.data,
            robustness=not args.no_robustness,
            seed=args.seed,
            limit=args.limit,
            realistic=args.realistic,
        )
    except ModelError as exc:
        log.error("%s", exc)
        return 1
    if args.plot:
        title = f"{Path(card).stem} on {args.data.name}: accuracy {report['accuracy']:.3f}"
        plot_confusion(confusion, labels, title, args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['n']} images, accuracy {report['accuracy']:.4f}, "
            f"macro-F1 {report['macro_f1']:.4f}"
        )
        for label, recall in report["per_class"].items():
            print(f"  {label:<9} recall {recall:.3f}")
        for name, acc in report.get("robustness", {}).items():
            print(f"  robustness {name:<12} accuracy {acc:.4f}")
        for name, acc in report.get("realistic", {}).items():
            print(f"  realistic {name:<16} accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
