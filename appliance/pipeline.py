"""The per-frame data path: frame -> faces -> emotion probabilities and valence-arousal ->
smoothed state.

Built once from the config (models loaded, detector chosen) and then called for every
frame. It does no I/O: storage, status and events are the daemon's business, so the
same object serves the daemon, the benchmarks and the evaluation tools.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from appliance.affect.smoothing import AffectState, EmotionSmoother
from appliance.affect.va import ProbabilityVA
from appliance.capture.base import Frame
from appliance.common.cores import (
    CorePlan,
    available_cores,
    give_spare_threads,
    plan_cores,
    set_opencv_threads,
)
from appliance.config import Config
from appliance.vision.blazeface import BlazeFaceDetector
from appliance.vision.depth import NO_DEPTH, FaceDepth, measure_face
from appliance.vision.detector import FaceFinder, FinderSettings
from appliance.vision.emotion import EmotionClassifier, InputKey, input_key
from appliance.vision.faces import Face
from appliance.vision.haar import HaarDetector
from appliance.vision.model_card import (
    ModelCard,
    default_models_dir,
    load_card,
    load_model_card,
    members_of,
    resolve_card,
)
from appliance.vision.model_guard import check_loads
from appliance.vision.preprocess import crop_face, prepare_face
from appliance.vision.runtime import ModelError, runtime_name, threads_that_pay
from appliance.vision.va_regressor import VARegressor

log = logging.getLogger(__name__)


# With depth, the finder keeps at least this many faces (Pipeline._find_more_faces).
DEPTH_CANDIDATES = 3


@dataclass(frozen=True)
class FaceResult:
    face: Face
    probs: dict[str, float]
    valence: float
    arousal: float
    # From the depth map, when the frame has one (vision/depth.py); None otherwise.
    distance_m: float | None = None
    relief_m: float | None = None
    live: bool | None = None  # False: flatter than detection.min_relief_m (photo, screen)

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
                    "distance_m": _rounded(r.distance_m, 3),
                    "relief_m": _rounded(r.relief_m, 4),
                    "live": r.live,
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


def _median_ms(run: Any, runs: int = 5) -> float:
    """Median ms of `run()` after one untimed call (start-up choices only)."""
    run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


class Detection(NamedTuple):
    """A frame after the first stage (Pipeline.detect): the faces chosen for the second
    stage (Pipeline.finish), with when detection started and ended (perf_counter)."""

    frame: Frame
    chosen: list[tuple[Face, FaceDepth, bool | None]]
    start: float
    detected: float


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def models_dir(config: Config) -> Path:
    return Path(config.models.dir) if config.models.dir else default_models_dir()


def model_threads(card: ModelCard, wanted: int) -> int:
    """TFLite threads for one model: its stage's share of the cores (`wanted`), capped
    where threads do not pay. The card's `"threads": {"best": n}` (measured with
    `tools/bench.py --model CARD --threads N`) overrides the code's rule, which gives one
    thread to a model XNNPACK does not run whole (runtime.threads_that_pay)."""
    spec = card.extra.get("threads")
    best = spec.get("best") if isinstance(spec, dict) else None
    if best is not None and (isinstance(best, bool) or not isinstance(best, int) or best < 1):
        log.warning(
            '%s: "threads": {"best": %r} is not a positive integer: ignored', card.path, best
        )
        best = None
    threads, why = threads_that_pay(card.model_path, wanted, best)
    if threads != wanted:
        log.info("%s: %d TFLite thread(s) of the %d its stage has (%s)", card.name, threads,
                 wanted, why)  # fmt: skip
    return threads


def build_finder(config: Config, threads: int | None = None) -> FaceFinder:
    """BlazeFace with search/verify/track; with `detection.haar_fallback`, Haar when the
    BlazeFace model is absent or unusable (damaged, not matching its card): a bad model
    file then costs detection quality, not the whole appliance. `threads`: TFLite threads
    for its stage (default: the plan of models.threads)."""
    if threads is None:
        threads = plan_cores(config.models.threads).detector_threads
    det = config.detection
    settings = FinderSettings(
        min_score=det.min_score, max_faces=det.max_faces, min_face_px=det.min_face_px
    )
    try:
        card = load_model_card(resolve_card(config.models.detector, models_dir(config)))
        if not card.model_path.is_file() and det.haar_fallback:
            log.warning(
                "%s missing; using OpenCV's Haar cascade (slower, fewer faces found). "
                "Run tools/fetch_models.py to fetch BlazeFace.",
                card.model_path,
            )
            return _haar_finder(config, settings, f"{card.model_path} missing")
        card.check_file()
        threads = model_threads(card, threads)
        check_loads(card, config.storage.state_dir, threads)
        # Candidates come from low scores; the finder applies min_score after verification.
        blaze = BlazeFaceDetector(
            card,
            threads=threads,
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


def build_classifier(config: Config, threads: int | None = None) -> EmotionClassifier:
    if threads is None:
        threads = plan_cores(config.models.threads).classifier_threads
    card = load_card(resolve_card(config.models.emotion, models_dir(config)))
    members = members_of(card)  # one model, or an ensemble's
    for member in members:
        member.check_file()  # missing or not matching its card: before any load
    threads = min(model_threads(member, threads) for member in members)
    for member in members:
        check_loads(member, config.storage.state_dir, threads)
    return EmotionClassifier(card, threads=threads, classes=config.emotion.classes)


@dataclass(frozen=True)
class VAChoice:
    """The VA model in use, or None with the reason VA comes from the probabilities."""

    model: VARegressor | None
    reason: str = ""
    failed: bool = False  # configured but unusable: worth a WARNING in status


def build_va(config: Config, threads: int | None = None) -> VAChoice:
    """The configured VA model. An unusable one is not fatal: the appliance still works
    with VA from the emotion probabilities, and status carries the reason."""
    if not config.models.va:
        return VAChoice(None, 'disabled in config ([models] va = "")')
    if threads is None:
        threads = plan_cores(config.models.threads).classifier_threads
    try:
        card = load_model_card(resolve_card(config.models.va, models_dir(config)))
        card.check_file()
        threads = model_threads(card, threads)
        check_loads(card, config.storage.state_dir, threads)
        return VAChoice(VARegressor(card, threads=threads))
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
        plan: CorePlan | None = None,
    ) -> None:
        self.finder = finder
        self.classifier = classifier
        self.va = va or VAChoice(None, "no VA model given")
        # how the frame loop spends its cores (overlap); one core unless given
        self.plan = plan or plan_cores(1)
        self.margin = config.detection.margin
        self.crop_shift = config.detection.crop_shift
        self.max_faces = config.detection.max_faces
        self.max_distance_m = config.detection.max_distance_m
        self.min_relief_m = config.detection.min_relief_m
        self.reject_flat = config.detection.reject_flat
        self._depth_seen = False  # a frame with depth came: see _find_more_faces
        self.smoother = EmotionSmoother(classifier.labels, config.smoothing)
        try:
            self._va_from_probs = ProbabilityVA(classifier.labels)
        except ValueError as exc:
            raise ModelError(f"{classifier.card.path}: {exc}") from exc
        # The VA model reads the classifier's prepared tensor when their cards agree on it.
        self._va_input: InputKey | None = (
            None if self.va.model is None else input_key(self.va.model.card)
        )

    @classmethod
    def from_config(cls, config: Config, plan: CorePlan | None = None) -> Pipeline:
        """Models loaded with the TFLite threads of the plan for `models.threads` (or of
        `plan`, which benchmarks vary), whose OpenCV threads are set here (process-wide)."""
        if plan is None:
            plan = plan_cores(config.models.threads)
            if plan.loop_cores >= 3:  # spare cores: to the stage slower on this machine
                plan = give_spare_threads(plan, *cls._stage_ms(config))
        if plan.cores > available_cores():
            log.warning("models.threads = %s: more cores than the %d this process may run on",
                        config.models.threads, available_cores())  # fmt: skip
        finder = build_finder(config, plan.detector_threads)
        if not isinstance(finder.detector, BlazeFaceDetector):
            # Haar, OpenCV's: its stage outweighs the rest ~20x, so OpenCV's pool gets
            # the frame loop's cores (the finishing stage's short work shares them)
            plan = dataclasses.replace(plan, opencv_threads=plan.loop_cores)
        set_opencv_threads(plan.opencv_threads)
        return cls(
            finder,
            build_classifier(config, plan.classifier_threads),
            config,
            build_va(config, plan.classifier_threads),
            plan,
        )

    @staticmethod
    def _stage_ms(config: Config) -> tuple[float, float]:
        """ms per frame of each stage on one thread, timed here on a noise frame of the
        camera's size: BlazeFace on the whole frame (letterbox, invoke, decode), and a
        face crop prepared, classified and given VA (Haar: the slower stage)."""
        set_opencv_threads(1)
        finder, va = build_finder(config, 1), build_va(config, 1)
        classifier = build_classifier(config, 1)
        frame = np.random.default_rng(0).integers(
            0, 256, (config.camera.height, config.camera.width, 3), np.uint8
        )
        crop = frame[: frame.shape[0] // 2, : frame.shape[0] // 2]

        def finish() -> None:
            probs = classifier.classify(crop)
            if va.model is not None:
                va.model.predict_input(prepare_face(crop, va.model.card))
            ProbabilityVA(classifier.labels)(probs)

        detector = finder.detector
        blaze = isinstance(detector, BlazeFaceDetector)
        detect_ms = _median_ms(lambda: detector.detect(frame)) if blaze else math.inf
        finish_ms = _median_ms(finish)
        log.info("stages on one thread: detect %.2f ms, classify + VA %.2f ms",
                 detect_ms, finish_ms)  # fmt: skip
        return detect_ms, finish_ms

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
            "cores": self.cores(),
        }

    def cores(self) -> dict[str, Any]:
        """The core plan and the TFLite threads each model got (for status and bench)."""
        detector = self.finder.detector
        tflite = {
            "detector": detector.model.threads if isinstance(detector, BlazeFaceDetector) else 0,
            "emotion": self.classifier.threads,
            "va": self.va.model.model.threads if self.va.model else 0,
        }
        plan = self.plan
        return {
            "setting": plan.setting,
            "given": plan.cores,
            "frame_loop": plan.loop_cores,
            "overlap": plan.overlap,
            "tflite_threads": tflite,  # 0: no such model (Haar, VA from probabilities)
            "opencv_threads": plan.opencv_threads,
        }

    def reset(self) -> None:
        """Forget tracks, e.g. after a camera reconnect (smoothing decays on its own)."""
        self.finder.reset()

    def process(self, frame: Frame) -> FrameResult:
        return self.finish(self.detect(frame))

    def detect(self, frame: Frame) -> Detection:
        """The first stage: the faces to classify (finder state: the frame loop's alone)."""
        start = time.perf_counter()
        if frame.depth is not None and not self._depth_seen:
            self._find_more_faces()
        faces = self.finder.find(frame.image, frame.t)
        chosen = self._choose(faces, frame.depth)
        return Detection(frame, chosen, start, time.perf_counter())

    def finish(self, detection: Detection) -> FrameResult:
        """The second stage: emotion, VA and smoothing (smoother state: this stage's
        alone). With overlapping stages it runs on one worker while the loop detects the
        next frame; `total` then includes the wait for that worker (the hand-off)."""
        frame, chosen, start, detected = detection
        begun = time.perf_counter()
        results = []
        va_s = 0.0
        for face, depth, live in chosen:
            crop = crop_face(frame.image, face.box, self.margin, self.crop_shift)
            inputs = self.classifier.prepare(crop)  # one pass per distinct preprocessing
            probs = self.classifier.classify_prepared(inputs)
            va_start = time.perf_counter()
            valence, arousal = self._valence_arousal(crop, inputs, probs)
            va_s += time.perf_counter() - va_start
            named = dict(zip(self.classifier.labels, probs.tolist(), strict=True))
            results.append(
                FaceResult(face, named, valence, arousal, depth.distance_m, depth.relief_m, live)
            )
        classified = time.perf_counter()
        primary = results[0] if results else None  # nearest first with depth, else largest
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
                "classify": (classified - begun - va_s) * 1e3,
                "va": va_s * 1e3,
                "smooth": (done - classified) * 1e3,
                "total": (done - start) * 1e3,
            },
        )

    def _find_more_faces(self) -> None:
        """The source has depth: the finder keeps at least DEPTH_CANDIDATES faces (and
        verifies twice as many candidates: a face is often one in both search tiles), so
        that the nearest can be chosen among them and a far or flat face does not take
        the place of the one at the desk."""
        self._depth_seen = True
        settings = self.finder.settings
        settings.max_faces = max(settings.max_faces, DEPTH_CANDIDATES)
        settings.max_candidates = max(settings.max_candidates, 2 * settings.max_faces)

    def _choose(
        self, faces: list[Face], depth: np.ndarray | None
    ) -> list[tuple[Face, FaceDepth, bool | None]]:
        """The faces to classify, in the order the first one is the one followed: without
        depth the finder's (largest first); with depth each face's distance and relief are
        measured, faces beyond detection.max_distance_m are left out, flat ones are marked
        live: false (and left out with detection.reject_flat), and the nearest comes
        first (faces whose box holds no depth after those with one, largest first); at
        most detection.max_faces of them."""
        if depth is None:
            return [(face, NO_DEPTH, None) for face in faces[: self.max_faces]]
        chosen = []
        for face in faces:
            measured = measure_face(depth, face.box)
            distance, relief = measured.distance_m, measured.relief_m
            live = None if relief is None else relief >= self.min_relief_m
            if self.max_distance_m > 0 and distance is not None and distance > self.max_distance_m:
                continue  # not the person at the desk
            if self.reject_flat and live is False:
                continue  # a photo or a screen
            chosen.append((face, measured, live))
        chosen.sort(key=lambda c: (c[1].distance_m is None, c[1].distance_m or 0.0, -c[0].area))
        return chosen[: self.max_faces]

    def _valence_arousal(
        self, crop: np.ndarray, inputs: dict[InputKey, np.ndarray], probs: np.ndarray
    ) -> tuple[float, float]:
        model = self.va.model
        if model is None:
            return self._va_from_probs(probs)
        x = inputs.get(self._va_input)
        return model.predict_input(x if x is not None else prepare_face(crop, model.card))
