"""The frame loop: capture -> pipeline -> (events, board), and nothing slow.

Live cameras that fail are reopened with backoff; file sources end the run. SIGINT,
SIGTERM and SIGHUP (an SSH session closing on a manual run) end it cleanly: status says
"stopping" at once, the current frame finishes, the background workers are stopped in
reverse order of their start within the unit's stop timeout (the publisher last: it
writes the final samples and status), and status says "stopped". A start that fails
leaves a "failed" status with the reason. The exit code is the worst problem of the run:
samples that could not be stored make it 1 even when the source ended normally.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from appliance import __version__
from appliance.capture import CaptureError, FrameSource, SourceConfigError, open_source
from appliance.capture.base import Frame
from appliance.common import process
from appliance.common.backoff import Backoff
from appliance.common.redact import redact
from appliance.common.worker import Crew, Worker
from appliance.config import EXIT_CONFIG, Config
from appliance.config.secrets import read_secret
from appliance.pipeline import FrameResult, Pipeline
from appliance.service.notify import Notifier, ServiceHeartbeat
from appliance.service.publisher import Board, Publisher
from appliance.service.stages import FrameStages
from appliance.service.status import stale_after, write_status
from appliance.store.retention import Retention
from appliance.store.samples import RunClock, set_live_run
from appliance.vision.preprocess import crop_face

if TYPE_CHECKING:
    from appliance.link.worker import MqttLink
    from appliance.music.stack import MusicStack
    from appliance.vlm.worker import VlmWorker

log = logging.getLogger(__name__)

# A camera that fails is reopened after 0.5 s, 1 s, 2 s ... up to a minute: an unplugged
# camera costs one attempt a minute, not three journal lines every 4 s (~65,000 a day).
RECONNECT_BACKOFF_S = (0.5, 60.0)  # first, longest
# The same camera error is logged once, then again every this often while it lasts.
CAMERA_REMINDER_S = 300.0
READ_TIMEOUT_S = 2.0
# systemd/emotion-appliance.service's TimeoutStopSec (a test keeps them equal): past it
# systemd kills the process. From the stop request, the frame loop, the source's close
# and the workers share STOP_BUDGET_S; the rest is for the interpreter's own exit.
STOP_TIMEOUT_S = 15.0
STOP_BUDGET_S = STOP_TIMEOUT_S - 2.0
FINAL_STATUS_S = 1.0  # kept back from the publisher's last write for the final status
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Daemon:
    """One run of the appliance over one source."""

    def __init__(
        self,
        config: Config,
        *,
        source: str | FrameSource | None = None,
        loop: bool = False,
        realtime: bool = False,
        max_frames: int | None = None,
        events: IO[str] | None = None,
        on_result: Callable[[FrameResult], None] | None = None,
        pipeline: Pipeline | None = None,
        pin_factory: Any = None,
        notifier: Notifier | None = None,
        stop_budget_s: float = STOP_BUDGET_S,
        pause: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        # a spec, or a FrameSource built elsewhere (an embedding program, a test's fake)
        self._given = source if isinstance(source, FrameSource) else None
        self.spec = source.describe() if self._given else (source or config.camera.source)
        self.spec_origin = "--source" if source else "camera.source"  # for error messages
        self.loop = loop
        self.realtime = realtime  # files and folders paced at their frame rate
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
        self.stop_budget_s = stop_budget_s
        # how a reconnect waits (a stop cuts it short); tests pass one that records
        self.pause: Callable[[float], object] = pause or (lambda s: self._stop.wait(s))
        self.clock = clock  # for how long a camera has been missing (tests inject one)
        self.output_closed = False  # --events or the printer's reader went away
        self._stop = threading.Event()
        self._stop_asked_at: float | None = None
        self._board: Board | None = None
        self._publisher: Publisher | None = None
        self._stages: FrameStages | None = None  # how frames go through the pipeline

    def stop(self, *_: object) -> None:
        """Ask the loop to end after the current frame. Safe from signal handlers: it
        sets flags and events only (no lock the interrupted main thread may hold), and
        wakes the publisher so status says "stopping" at once."""
        if not self._stop.is_set():
            self._stop_asked_at = time.monotonic()
            self.notifier.stopping()
        self._stop.set()
        if self._board is not None:
            self._board.stopping = True
        if self._publisher is not None:
            self._publisher.wake()

    def _source(self) -> FrameSource:
        if self._given is not None:
            return self._given
        cam = self.config.camera
        return open_source(
            self.spec, width=cam.width, height=cam.height, fps=cam.fps, loop=self.loop,
            realtime=self.realtime,
        )  # fmt: skip

    def run(self) -> int:
        """Process until the source ends, max_frames, or a signal; returns an exit code.

        A start that fails (a source that can never work, a bad model or secret) writes
        a "failed" status with the reason; the exception goes on to the caller, which
        maps it to an exit code."""
        try:
            source = self._source()  # parse the spec before loading models: fail fast
        except SourceConfigError as exc:
            log.error("%s: %s", self.spec_origin, exc)
            self._write_failed(f"{self.spec_origin}: {exc}")
            return EXIT_CONFIG
        except Exception as exc:  # a file or folder that is not there (yet): exit 1
            self._write_failed(str(exc))
            raise
        try:
            pipeline = self.pipeline or Pipeline.from_config(self.config)
            vlm = self._vlm()  # a refused key file fails here, before hardware is claimed
            link = self._mqtt()  # so does a refused MQTT password or CA file
            music = self._music()
        except Exception as exc:
            self._write_failed(str(exc))
            raise
        board = self._board = Board(
            info={**pipeline.describe(), "source": source.describe()},
            sample_period_s=1.0 / self.config.storage.sample_hz,
            run=RunClock(),  # one id per run, on every event it stores
        )
        self.heartbeat = time.monotonic()
        systemd = ServiceHeartbeat(self.notifier, lambda: self.heartbeat)
        if link is not None:  # it reads the board and the publisher's last snapshot
            link.attach(
                board=board,
                music=music,
                status=lambda: self._publisher.last_status if self._publisher else None,
            )
        publisher = self._publisher = Publisher(
            board,
            state_dir=self.config.storage.state_dir,
            runtime_dir=self.config.service.runtime_dir,
            status_interval_s=self.config.service.status_interval_s,
            companions=[c for c in (systemd, music, vlm, link) if c is not None],
            retention=Retention.from_config(self.config),
        )
        crew = Crew()
        workers: list[Worker] = [publisher, *(music.workers if music else [])]
        if vlm:
            workers.append(vlm)
        if link:
            workers.append(link)  # started last, stopped first: "offline" while all runs
        plan = getattr(pipeline, "plan", None)  # a test's fake pipeline has none: in order
        self._stages = FrameStages(pipeline, self._deliver, overlap=bool(plan and plan.overlap))
        if self._stages.worker is not None:
            workers.append(self._stages.worker)  # stopped first: it posts to the board
        previous = self._install_signals()
        code, final = 0, "stopped"
        try:
            set_live_run(board.run)  # likes, skips and played songs of this process
            crew.start(workers)  # publisher first: status is written from the start
            self._vlm_worker = vlm
            log.info("run %s on %s with %s", board.run.run_id, source.describe(), board.info)
            loop_start = time.perf_counter()
            try:
                ended = self._capture_loop(source, pipeline, board)
            finally:
                self.loop_s = time.perf_counter() - loop_start
            final = "finished" if ended else "stopped"
        except SourceConfigError as exc:
            final, code = "failed", EXIT_CONFIG
            board.set(last_error=f"{self.spec_origin}: {exc}")
            log.error("%s: %s", self.spec_origin, exc)
        except CaptureError as exc:
            final, code = "failed", 1
            board.set(last_error=str(exc))
            log.error("%s", exc)
        except BaseException as exc:
            final = "failed"
            board.set(last_error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            board.set(final_state=final)
            code = max(code, self._stop_crew(crew, publisher))
            set_live_run(None)
            if music:
                music.close()
            self._restore_signals(previous)
        return code

    def _stop_crew(self, crew: Crew, publisher: Publisher) -> int:
        """Stop the workers within what is left of the stop budget; 1 when samples were
        lost or the publisher could not finish its last write, else 0."""
        asked = self._stop_asked_at if self._stop_asked_at is not None else time.monotonic()
        left = max(FINAL_STATUS_S, asked + self.stop_budget_s - time.monotonic())
        publisher.final_wait_s = max(0.0, left - FINAL_STATUS_S - 1.0)
        missed = crew.stop(left)
        if publisher.name in missed:
            # its thread is stuck (a disk that blocks writes): say so before exiting
            self._write_final_status(publisher)
            return 1
        if publisher.samples_lost or publisher.storage_error:
            return 1
        return 0

    def _write_final_status(self, publisher: Publisher) -> None:
        """The publisher missed its deadline (its thread is stuck in a write): the final
        status, written from here, says so; the unwritten samples are lost."""
        problem = publisher.storage_error or "the last write of samples did not finish"
        try:
            snapshot = publisher.snapshot()
            snapshot.update(
                state=publisher.board.final_state or "stopped",
                storage_error=problem,
                last_error=problem,
            )
            write_status(self.config.service.runtime_dir, snapshot)
        except Exception as exc:  # the last word must not turn into a traceback
            log.error("final status not written: %s", exc)

    def _write_failed(self, reason: str) -> None:
        """A start that failed: a "failed" status with the reason, so `status` does not
        say "no daemon status" or show an older run's snapshot."""
        now = time.time()
        snapshot = {
            "version": __version__,
            **process.identity(),
            "state": "failed",
            "started_at": now,
            "updated_at": now,
            "updated_monotonic": time.monotonic(),
            "source": redact(self.spec),
            "last_error": reason,
        }
        try:
            write_status(self.config.service.runtime_dir, snapshot)
        except OSError as exc:
            log.warning("cannot write status to %s: %s", self.config.service.runtime_dir, exc)

    def _music(self) -> MusicStack | None:
        if not self.config.music.enabled:
            return None
        from appliance.music.stack import MusicStack  # spotipy, gpiozero: only when used

        return MusicStack(self.config, pin_factory=self.pin_factory)

    def _mqtt(self) -> MqttLink | None:
        """The MQTT link, only when enabled: otherwise nothing leaves the device."""
        settings = self.config.mqtt
        if not settings.enabled:
            return None
        from appliance.link.client import read_password  # paho: only when used
        from appliance.link.worker import MqttLink

        if warning := settings.cleartext_warning():
            log.warning("%s", warning)
        return MqttLink(
            settings,
            password=read_password(settings),
            stale_after_s=stale_after(self.config.service.status_interval_s),
        )

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
        run_id = self._board.run.run_id if self._board is not None else None
        vlm.offer(image, context, now, stamp=(run_id, result.t))  # the frame's moment

    def _capture_loop(self, source: FrameSource, pipeline: Pipeline, board: Board) -> bool:
        """True when the source ended by itself (end of file or max_frames).

        Live sources are reopened with growing delays while they fail, and the delays start
        over only once a frame arrives: a camera that opens but never delivers is the same
        outage, not a new one each time. Status says "waiting for camera" meanwhile; the
        error is logged once, then as a reminder every CAMERA_REMINDER_S.
        """
        backoff = Backoff(*RECONNECT_BACKOFF_S)
        outage: tuple[str, float, float] | None = None  # (error, since, last logged)
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
                now = self.clock()
                if self.frames > frames_before:
                    backoff.reset()
                    if outage is not None:
                        log.info("camera worked again after %.0f s", now - outage[1])
                    outage = None
                delay = backoff.next()
                if outage is None or outage[0] != str(exc):
                    log.warning("%s; retrying, up to every %.0f s", exc, RECONNECT_BACKOFF_S[1])
                    outage = (str(exc), now if outage is None else outage[1], now)
                elif now - outage[2] >= CAMERA_REMINDER_S:
                    log.warning("camera still unavailable after %.0f min: %s",
                                (now - outage[1]) / 60, exc)  # fmt: skip
                    outage = (outage[0], outage[1], now)
                else:
                    log.debug("%s; reconnecting in %.1f s", exc, delay)
                board.set(camera_error=str(exc), state="waiting for camera")
                # progress is promised for the end of the wait: the watchdog keeps quiet
                self.heartbeat = time.monotonic() + delay
                pipeline.reset()
                self.pause(delay)
            finally:
                source.close()
        return False

    def _consume(self, source: FrameSource, pipeline: Pipeline, board: Board) -> bool:
        stages = self._stages or FrameStages(pipeline, self._deliver, overlap=False)
        try:
            while not self._stop.is_set():
                frame = source.read(timeout=READ_TIMEOUT_S)
                self.heartbeat = time.monotonic()
                if frame is None:
                    return True
                self.frames += 1
                # one core: process and deliver here; more: detect here while the
                # finishing worker delivers the frame before (stages.py)
                stages.submit(frame)
                if self.output_closed:
                    return False
                if self.max_frames is not None and self.frames >= self.max_frames:
                    return True
            return False
        finally:
            self._settle(stages)

    def _settle(self, stages: FrameStages) -> None:
        """The frame in flight delivered before the loop ends or reconnects: within the
        stop budget once a stop was asked for (a worker stuck past it is left to the
        crew's stop, which reports it)."""
        asked = self._stop_asked_at
        left = None if asked is None else max(0.0, asked + self.stop_budget_s - time.monotonic())
        if not stages.settle(left):
            log.error("the frame in flight was not finished within the stop budget")

    def _deliver(self, frame: Frame, result: FrameResult) -> None:
        """A processed frame, in frame order: to the board, the VLM and the outputs. On
        the frame loop, or on the finishing worker when the stages overlap: one thread
        either way."""
        assert self._board is not None
        self._board.post(result)
        self._offer_to_vlm(frame, result)
        if self.output_closed:
            return
        try:
            if self.events is not None:
                self.events.write(json.dumps(result.to_event()) + "\n")
                self.events.flush()
            if self.on_result is not None:
                self.on_result(result)
        except (BrokenPipeError, ValueError) as exc:
            # `run --events - | head -n 1`: the reader went away. Like any Unix
            # filter the run ends there, but cleanly (final samples and status).
            # ValueError: the file was closed under us.
            log.info("output closed (%s): stopping", exc)
            self.output_closed = True
            self.stop()

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self.stop) for sig in STOP_SIGNALS}

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
