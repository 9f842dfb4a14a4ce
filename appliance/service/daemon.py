"""The frame loop: capture -> pipeline -> (events, board), and nothing slow.

Live cameras that fail are reopened with backoff; file sources end the run. SIGINT and
SIGTERM end it cleanly: the current frame finishes, the publisher flushes, status says
"stopped".
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from appliance.capture import CaptureError, FrameSource, SourceConfigError, open_source
from appliance.capture.base import Frame
from appliance.config import EXIT_CONFIG, Config
from appliance.config.secrets import read_secret
from appliance.pipeline import FrameResult, Pipeline
from appliance.service.notify import Notifier, ServiceHeartbeat
from appliance.service.publisher import Board, Publisher
from appliance.store.retention import Retention
from appliance.vision.preprocess import crop_face

if TYPE_CHECKING:
    from appliance.music.stack import MusicStack
    from appliance.vlm.worker import VlmWorker

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)
READ_TIMEOUT_S = 2.0


class Daemon:
    """One run of the appliance over one source."""

    def __init__(
        self,
        config: Config,
        *,
        source: str | None = None,
        loop: bool = False,
        max_frames: int | None = None,
        events: IO[str] | None = None,
        on_result: Callable[[FrameResult], None] | None = None,
        pipeline: Pipeline | None = None,
        pin_factory: Any = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.spec = source or config.camera.source
        self.spec_origin = "--source" if source else "camera.source"  # for error messages
        self.loop = loop
        self.max_frames = max_frames
        self.events = events
        self.on_result = on_result
        self.pipeline = pipeline
        self.pin_factory = pin_factory  # gpiozero factory; tests pass MockFactory
        self.frames = 0
        self._vlm_worker: VlmWorker | None = None
        self.loop_s = 0.0  # wall time of the frame loop alone (benchmarks, tests)
        self.heartbeat = time.monotonic()  # last progress of the frame loop (watchdog)
        self.notifier = notifier or Notifier()
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        """Ask the loop to end after the current frame (safe from signal handlers)."""
        if not self._stop.is_set():
            self.notifier.stopping()
        self._stop.set()

    def _source(self) -> FrameSource:
        cam = self.config.camera
        return open_source(
            self.spec, width=cam.width, height=cam.height, fps=cam.fps, loop=self.loop
        )

    def run(self) -> int:
        """Process until the source ends, max_frames, or a signal; returns an exit code."""
        try:
            source = self._source()  # parse the spec before loading models: fail fast
        except SourceConfigError as exc:
            log.error("%s: %s", self.spec_origin, exc)
            return EXIT_CONFIG
        pipeline = self.pipeline or Pipeline.from_config(self.config)
        board = Board(
            info={**pipeline.describe(), "source": source.describe()},
            sample_period_s=1.0 / self.config.storage.sample_hz,
        )
        vlm = self._vlm()  # a refused key file fails here, before any hardware is claimed
        music = self._music()
        previous = self._install_signals()
        self.heartbeat = time.monotonic()
        systemd = ServiceHeartbeat(self.notifier, lambda: self.heartbeat)
        publisher = Publisher(
            board,
            state_dir=self.config.storage.state_dir,
            runtime_dir=self.config.service.runtime_dir,
            status_interval_s=self.config.service.status_interval_s,
            companions=[c for c in (systemd, music, vlm) if c is not None],
            retention=Retention.from_config(self.config),
        )
        if music:
            music.start()
        if vlm:
            vlm.start()
        self._vlm_worker = vlm
        publisher.start()
        log.info("running on %s with %s", source.describe(), board.info)
        try:
            loop_start = time.perf_counter()
            try:
                ended = self._capture_loop(source, pipeline, board)
            finally:
                self.loop_s = time.perf_counter() - loop_start
            board.set(state="finished" if ended else "stopped")
            return 0
        except SourceConfigError as exc:
            board.set(state="error", last_error=f"{self.spec_origin}: {exc}")
            log.error("%s: %s", self.spec_origin, exc)
            return EXIT_CONFIG
        except CaptureError as exc:
            board.set(state="error", last_error=str(exc))
            log.error("%s", exc)
            return 1
        finally:
            if vlm:
                vlm.stop()
            publisher.stop()
            if music:
                music.stop()
            self._restore_signals(previous)

    def _music(self) -> MusicStack | None:
        if not self.config.music.enabled:
            return None
        from appliance.music.stack import MusicStack  # spotipy, gpiozero: only when used

        return MusicStack(self.config, pin_factory=self.pin_factory)

    def _vlm(self) -> VlmWorker | None:
        """The remote VLM worker, only when enabled: otherwise nothing leaves the device."""
        settings = self.config.vlm
        if not settings.enabled:
            return None
        from appliance.vlm.client import VlmClient
        from appliance.vlm.worker import VlmWorker

        key = read_secret(settings.api_key_file, "VLM API key") if settings.api_key_file else None
        log.info("VLM context from %s (%s) every %.0f s", settings.shown_endpoint,
                 settings.model, settings.interval_s)  # fmt: skip
        if warning := settings.cleartext_warning():
            log.warning("%s", warning)
        return VlmWorker(settings, self.config.storage.state_dir, VlmClient(settings, key))

    def _offer_to_vlm(self, frame: Frame, result: FrameResult) -> None:
        """On the frame loop: a few comparisons, and a copy of the crop when one is due."""
        vlm = self._vlm_worker
        state = result.smoothed
        now = time.monotonic()
        if vlm is None or not result.faces or not vlm.wants(now, state.emotion):
            return
        image = frame.image
        if self.config.vlm.send == "face":
            det = self.config.detection
            image = crop_face(image, result.faces[0].face.box, det.margin, det.crop_shift)
        context = {
            "emotion": state.emotion,
            "confidence": state.confidence,
            "valence": state.valence if state.valence is not None else 0.0,
            "arousal": state.arousal if state.arousal is not None else 0.0,
        }
        vlm.offer(image, context, now)

    def _capture_loop(self, source: FrameSource, pipeline: Pipeline, board: Board) -> bool:
        """True when the source ended by itself (end of file or max_frames).

        Live sources are reopened with growing delays while they fail, and the delays start
        over only once a frame arrives: a camera that opens but never delivers is the same
        outage, not a new one each time.
        """
        failures = 0
        while not self._stop.is_set():
            frames_before = self.frames
            try:
                source.open()
                if self._consume(source, pipeline, board):
                    return True
            except SourceConfigError:
                raise  # retrying cannot fix it
            except CaptureError as exc:
                if not source.live:
                    raise
                if self.frames > frames_before:
                    failures = 0
                delay = RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)]
                failures += 1
                log.warning("%s; reconnecting in %.1f s", exc, delay)
                board.set(camera_error=str(exc))
                self.heartbeat = time.monotonic()  # reconnecting is progress, not a hang
                pipeline.reset()
                self._stop.wait(delay)
            finally:
                source.close()
        return False

    def _consume(self, source: FrameSource, pipeline: Pipeline, board: Board) -> bool:
        while not self._stop.is_set():
            frame = source.read(timeout=READ_TIMEOUT_S)
            self.heartbeat = time.monotonic()
            if frame is None:
                return True
            result = pipeline.process(frame)
            board.post(result)
            self._offer_to_vlm(frame, result)
            self.frames += 1
            if self.events is not None:
                self.events.write(json.dumps(result.to_event()) + "\n")
                self.events.flush()
            if self.on_result is not None:
                self.on_result(result)
            if self.max_frames is not None and self.frames >= self.max_frames:
                return True
        return False

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
