"""The per-frame data path: frame -> faces -> emotion probabilities and valence-arousal ->
smoothed state.

Built once from the config (models loaded, detector chosen) and then called for every
frame. It does no I/O: storage, status and events are the daemon's business, so the
same object serves the daemon, the benchmarks and the evaluation tools.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.affect.smoothing import AffectState, EmotionSmoother
from appliance.affect.va import ProbabilityVA
from appliance.capture.base import Frame
from appliance.config import Config
from appliance.vision.blazeface import BlazeFaceDetector
from appliance.vision.detector import FaceFinder, FinderSettings
from appliance.vision.emotion import EmotionClassifier
from appliance.vision.faces import Face
from appliance.vision.haar import HaarDetector
from appliance.vision.model_card import default_models_dir, load_card, resolve_card
from appliance.vision.model_guard import check_loads
from appliance.vision.preprocess import crop_face, prepare_face
from appliance.vision.runtime import ModelError, runtime_name
from appliance.vision.va_regressor import VARegressor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceResult:
    face: Face
    probs: dict[str, float]
    valence: float
    arousal: float

    @property
    def emotion(self) -> str:
        return max(self.probs, key=self.probs.__getitem__)


@dataclass(frozen=True)
class FrameResult:
    """Everything known about one processed frame."""

    index: int
    t: float
    faces: list[FaceResult]
    smoothed: AffectState
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        """The documented `--events` JSON object."""
        return {
            "frame": self.index,
            "t": round(self.t, 4),
            "faces": [
                {
                    "box": list(r.face.box),
                    "score": round(r.face.score, 4),
                    "emotion": r.emotion,
                    "probs": {k: round(v, 4) for k, v in r.probs.items()},
                    "valence": round(r.valence, 4),
                    "arousal": round(r.arousal, 4),
                }
                for r in self.faces
            ],
            "smoothed": {
                "emotion": self.smoothed.emotion,
                "confidence": self.smoothed.confidence,
                "valence": self.smoothed.valence,
                "arousal": self.smoothed.arousal,
            },
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
        }


def models_dir(config: Config) -> Path:
    return Path(config.models.dir) if config.models.dir else default_models_dir()


def build_finder(config: Config) -> FaceFinder:
    """BlazeFace with search/verify/track; with `detection.haar_fallback`, Haar when the
    BlazeFace model is absent or unusable (damaged, not matching its card): a bad model
    file then costs detection quality, not the whole appliance."""
    det = config.detection
    settings = FinderSettings(
        min_score=det.min_score, max_faces=det.max_faces, min_face_px=det.min_face_px
    )
    try:
        card = load_card(resolve_card(config.models.detector, models_dir(config)))
        if not card.model_path.is_file() and det.haar_fallback:
            log.warning(
                "%s missing; using OpenCV's Haar cascade (slower, fewer faces found). "
                "Run tools/fetch_models.py to fetch BlazeFace.",
                card.model_path,
            )
            return _haar_finder(config, settings, f"{card.model_path} missing")
        card.check_file()
        check_loads(card, config.storage.state_dir, config.models.threads)
        # Candidates come from low scores; the finder applies min_score after verification.
        blaze = BlazeFaceDetector(
            card,
            threads=config.models.threads,
            min_score=min(settings.candidate_score, det.min_score),
        )
    except ModelError as exc:
        if not det.haar_fallback:
            raise
        log.error(
            "BlazeFace unusable, using OpenCV's Haar cascade (slower, fewer faces found): %s", exc
        )
        return _haar_finder(config, settings, f"BlazeFace unusable: {exc}")
    return FaceFinder(blaze, settings)


def _haar_finder(config: Config, settings: FinderSettings, reason: str) -> FaceFinder:
    detector = HaarDetector(min_face_px=config.detection.min_face_px)
    return FaceFinder(detector, settings, detector_error=reason)


def build_classifier(config: Config) -> EmotionClassifier:
    card = load_card(resolve_card(config.models.emotion, models_dir(config)))
    card.check_file()  # missing or not matching its card: before any load
    check_loads(card, config.storage.state_dir, config.models.threads)
    return EmotionClassifier(card, threads=config.models.threads, classes=config.emotion.classes)


@dataclass(frozen=True)
class VAChoice:
    """The VA model in use, or None with the reason VA comes from the probabilities."""

    model: VARegressor | None
    reason: str = ""
    failed: bool = False  # configured but unusable: worth a WARNING in status


def build_va(config: Config) -> VAChoice:
    """The configured VA model. An unusable one is not fatal: the appliance still works
    with VA from the emotion probabilities, and status carries the reason."""
    if not config.models.va:
        return VAChoice(None, 'disabled in config ([models] va = "")')
    try:
        card = load_card(resolve_card(config.models.va, models_dir(config)))
        card.check_file()
        check_loads(card, config.storage.state_dir, config.models.threads)
        return VAChoice(VARegressor(card, threads=config.models.threads))
    except ModelError as exc:
        log.warning("VA model unusable, valence/arousal come from emotion probabilities: %s", exc)
        return VAChoice(None, f"VA model unusable: {exc}", failed=True)


class Pipeline:
    """Stateful (tracking, smoothing) processor for one video stream."""

    def __init__(
        self,
        finder: FaceFinder,
        classifier: EmotionClassifier,
        config: Config,
        va: VAChoice | None = None,
    ) -> None:
        self.finder = finder
        self.classifier = classifier
        self.va = va or VAChoice(None, "no VA model given")
        self.margin = config.detection.margin
        self.crop_shift = config.detection.crop_shift
        self.smoother = EmotionSmoother(classifier.labels, config.smoothing)
        try:
            self._va_from_probs = ProbabilityVA(classifier.labels)
        except ValueError as exc:
            raise ModelError(f"{classifier.card.path}: {exc}") from exc
        # Both models read the same prepared tensor when their cards agree on the input.
        va_model = self.va.model
        self._va_shares_input = va_model is not None and (
            va_model.card.input_size,
            va_model.card.channels,
            va_model.card.mean,
            va_model.card.std,
            va_model.card.per_crop_min_std,
        ) == (
            classifier.card.input_size,
            classifier.card.channels,
            classifier.card.mean,
            classifier.card.std,
            classifier.card.per_crop_min_std,
        )

    @classmethod
    def from_config(cls, config: Config) -> Pipeline:
        return cls(build_finder(config), build_classifier(config), config, build_va(config))

    def describe(self) -> dict[str, Any]:
        """Which models and runtime are in use, for status and logs."""
        detector = self.finder.detector
        return {
            "detector": detector.card.name if isinstance(detector, BlazeFaceDetector) else "haar",
            "detector_error": self.finder.detector_error,
            "emotion_model": self.classifier.card.name,
            "va_model": self.va.model.card.name if self.va.model else None,
            "va_source": "model" if self.va.model else f"emotion probabilities ({self.va.reason})",
            "va_error": self.va.reason if self.va.failed else None,
            "labels": list(self.classifier.labels),
            "runtime": runtime_name(),
        }

    def reset(self) -> None:
        """Forget tracks, e.g. after a camera reconnect (smoothing decays on its own)."""
        self.finder.reset()

    def process(self, frame: Frame) -> FrameResult:
        start = time.perf_counter()
        faces = self.finder.find(frame.image, frame.t)
        detected = time.perf_counter()
        results = []
        va_s = 0.0
        for face in faces:
            crop = crop_face(frame.image, face.box, self.margin, self.crop_shift)
            x = prepare_face(crop, self.classifier.card)  # one preprocessing pass
            probs = self.classifier.classify_input(x)
            va_start = time.perf_counter()
            valence, arousal = self._valence_arousal(crop, x, probs)
            va_s += time.perf_counter() - va_start
            named = dict(zip(self.classifier.labels, probs.tolist(), strict=True))
            results.append(FaceResult(face, named, valence, arousal))
        classified = time.perf_counter()
        primary = results[0] if results else None  # faces come largest first
        state = self.smoother.update(
            frame.t,
            None if primary is None else [primary.probs[k] for k in self.classifier.labels],
            None if primary is None else (primary.valence, primary.arousal),
        )
        done = time.perf_counter()
        return FrameResult(
            index=frame.index,
            t=frame.t,
            faces=results,
            smoothed=state,
            latency_ms={
                "detect": (detected - start) * 1e3,
                "classify": (classified - detected - va_s) * 1e3,
                "va": va_s * 1e3,
                "smooth": (done - classified) * 1e3,
                "total": (done - start) * 1e3,
            },
        )

    def _valence_arousal(
        self, crop: np.ndarray, x: np.ndarray, probs: np.ndarray
    ) -> tuple[float, float]:
        model = self.va.model
        if model is None:
            return self._va_from_probs(probs)
        return model.predict_input(x if self._va_shares_input else prepare_face(crop, model.card))
