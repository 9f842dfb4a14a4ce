"""The remote VLM: request schema, defensive parsing, worker triggers/backoff/breaker, and
the frame loop's speed with a hanging endpoint. Local servers on 127.0.0.1 only."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, ROOT, load_tool, requires_models

from appliance.config import load_config
from appliance.config.schema import VlmConfig
from appliance.vlm.client import (
    MAX_REPLY_BYTES,
    MAX_TOKENS,
    REASONING_MAX_TOKENS,
    VlmClient,
    VlmError,
    build_request,
    completions_url,
    encode_image,
    parse_reply,
    refuses_sampling_parameters,
)
from appliance.vlm.worker import BREAKER_FAILURES, VlmWorker

make_face_clip = load_tool("make_face_clip")
CONTEXT = {"emotion": "sad", "confidence": 0.71, "valence": -0.5, "arousal": -0.2}


def ok_reply(text: str = "  A person sits alone\n at a desk late at night.  ") -> bytes:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [choice]}).encode()


def refusal(param: str) -> bytes:
    """OpenAI's HTTP 400 body for a parameter a reasoning model does not take."""
    if param == "temperature":
        message = (
            "Unsupported value: 'temperature' does not support 0.2 with this model. "
            "Only the default (1) value is supported."
        )
        code = "unsupported_value"
    else:
        message = (
            f"Unsupported parameter: '{param}' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        code = "unsupported_parameter"
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return json.dumps({"error": error}).encode()


class VlmServer:
    """A chat-completions endpoint whose behaviour each test sets: answer, hang, 500,
    garbage, redirect. Records every request body."""

    def __init__(self, mode: str = "answer") -> None:
        self.mode = mode
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.release = threading.Event()
        self.hung_up = threading.Event()
        self.drip_s, self.drip_bytes = 0.25, 1
        self.location = "/elsewhere/chat/completions"  # where "redirect" points
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.bodies.append(json.loads(self.rfile.read(length)))
                server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b"not here", "text/plain")
                if server.mode == "hang":
                    server.release.wait(30)
                    return
                if server.mode == "redirect":  # a 307 would make requests re-send the body
                    self.send_response(307)
                    self.send_header("Location", server.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if server.mode == "400":
                    error = {"message": "Invalid image.", "code": "image_parse_error"}
                    return self._send(
                        400, json.dumps({"error": error}).encode(), "application/json"
                    )
                if server.mode == "500":
                    return self._send(500, b"<html><body>Bad gateway</body></html>", "text/html")
                if server.mode == "garbage":
                    return self._send(200, b"\x00\xffnot json", "application/json")
                if server.mode == "missing":
                    return self._send(200, b'{"choices": []}', "application/json")
                if server.mode == "reasoning":  # OpenAI's o-series and gpt-5
                    body = server.bodies[-1]
                    if "max_tokens" in body:
                        return self._send(400, refusal("max_tokens"), "application/json")
                    if body.get("temperature", 1) != 1:
                        return self._send(400, refusal("temperature"), "application/json")
                if server.mode == "refuses_all":  # a server that refuses either form
                    name = (
                        "max_tokens"
                        if "max_tokens" in server.bodies[-1]
                        else "max_completion_tokens"
                    )
                    return self._send(400, refusal(name), "application/json")
                if server.mode == "trickle":  # a slow body: headers at once, then drips
                    return self._trickle(ok_reply())
                if server.mode == "trickle_headers":  # even the status line drips
                    head = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + b"X-Padding: "
                        + b"x" * 200
                        + b"\r\n"
                    )
                    return self._drip(head)
                if server.mode == "huge":
                    return self._send(200, b"x" * (MAX_REPLY_BYTES + 10), "application/json")
                self._send(200, ok_reply(), "application/json")

            def _trickle(self, body):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                give_up = time.monotonic() + 8  # without the fix the test ends, not hangs
                try:
                    for i in range(0, len(body), server.drip_bytes):
                        if server.release.wait(server.drip_s) or time.monotonic() > give_up:
                            return
                        self.wfile.write(body[i : i + server.drip_bytes])
                        self.wfile.flush()
                except OSError:  # the client hung up: what the deadline is for
                    server.hung_up.set()

            def _drip(self, data):
                give_up = time.monotonic() + 8  # without the fix the test ends, not hangs
                try:
                    for i in range(len(data)):
                        if server.release.wait(server.drip_s) or time.monotonic() > give_up:
                            return
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                except OSError:
                    server.hung_up.set()

            def _send(self, status, body, kind):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = VlmServer()
    yield s
    s.close()


def settings(endpoint: str, **changes) -> VlmConfig:
    values = {"enabled": True, "endpoint": endpoint, "model": "test-vlm", "timeout_s": 2.0}
    values.update(changes)
    return VlmConfig(**values)


def face() -> np.ndarray:
    return cv2.imread(str(next(FIXTURE_FACES.glob("sad/*.jpg"))))


# ------------------------------------------------------------------------ client


def test_request_body_follows_the_chat_completions_schema(server):
    client = VlmClient(settings(server.endpoint, max_image_side=32), api_key="k-123")
    reply = client.describe(cv2.resize(face(), (200, 100)), CONTEXT)
    assert reply.text == "A person sits alone at a desk late at night."
    assert reply.latency_ms > 0
    body = server.bodies[0]
    assert body["model"] == "test-vlm" and isinstance(body["max_tokens"], int)
    (message,) = body["messages"]
    assert message["role"] == "user"
    text, image = message["content"]
    assert text["type"] == "text" and "sad" in text["text"] and "-0.50" in text["text"]
    assert "re-classify" in text["text"]
    assert image["type"] == "image_url"
    url = image["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), 1)
    assert max(jpeg.shape[:2]) == 32  # downscaled to max_image_side
    assert server.headers[0]["Authorization"] == "Bearer k-123"


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("500", r"HTTP 500 \(text/html\)"),
        ("garbage", "not JSON"),
        ("missing", "lacks choices"),
        ("huge", "larger than"),
        ("hang", "no complete reply within"),
    ],
)
def test_bad_replies_are_errors_not_exceptions_escaping(mode, words):
    s = VlmServer(mode)
    try:
        client = VlmClient(settings(s.endpoint, timeout_s=1.0))
        with pytest.raises(VlmError, match=words):
            client.describe(face(), CONTEXT)
    finally:
        s.close()


def test_a_trickling_reply_ends_at_the_timeout():
    """requests' timeout bounds each read, not the reply: one byte every 0.25 s kept
    iter_content (waiting for 8 KB) reading for ever, and the worker with it."""
    s = VlmServer("trickle")
    try:
        client = VlmClient(settings(s.endpoint, timeout_s=1.0))
        started = time.monotonic()
        with pytest.raises(VlmError, match=r"no complete reply within 1 s"):
            client.describe(face(), CONTEXT)
        assert time.monotonic() - started < 2.5
        client.close()
    finally:
        s.close()


def test_trickling_headers_end_at_the_timeout_too():
    """The deadline started only once the headers were in: a server dripping its status
    line and headers held the worker for the whole run, the breaker never opening."""
    s = VlmServer("trickle_headers")
    try:
        client = VlmClient(settings(s.endpoint, timeout_s=1.0))
        started = time.monotonic()
        with pytest.raises(VlmError, match=r"no complete reply within 1 s"):
            client.describe(face(), CONTEXT)
        assert time.monotonic() - started < 2.5
        assert s.hung_up.wait(3)  # the connection was cut, not left dripping
        client.close()
    finally:
        s.close()


def test_a_slow_reply_within_the_timeout_is_read():
    s = VlmServer("trickle")
    s.drip_s, s.drip_bytes = 0.02, 16  # about 0.2 s for the whole reply
    try:
        client = VlmClient(settings(s.endpoint, timeout_s=2.0))
        assert client.describe(face(), CONTEXT).text.startswith("A person")
        client.close()
    finally:
        s.close()


def test_a_reasoning_model_gets_max_completion_tokens_from_then_on():
    """o-series and gpt-5 refuse max_tokens (and temperature 0.2) with HTTP 400."""
    s = VlmServer("reasoning")
    try:
        client = VlmClient(settings(s.endpoint))
        assert client.describe(face(), CONTEXT).text.startswith("A person")
        first, retry = s.bodies
        assert first["max_tokens"] == MAX_TOKENS and first["temperature"] == 0.2
        assert "max_tokens" not in retry and "temperature" not in retry
        assert retry["max_completion_tokens"] == REASONING_MAX_TOKENS
        assert retry["messages"] == first["messages"]  # the same picture and prompt
        assert client.describe(face(), CONTEXT).text.startswith("A person")
        assert len(s.bodies) == 3 and "max_completion_tokens" in s.bodies[2]  # remembered
    finally:
        s.close()


def test_other_400s_are_not_retried_and_a_double_refusal_is_not_remembered():
    s = VlmServer("400")
    try:
        client = VlmClient(settings(s.endpoint))
        with pytest.raises(VlmError, match=r"HTTP 400.*image_parse_error"):
            client.describe(face(), CONTEXT)
        assert len(s.bodies) == 1 and not client.reasoning
        s.mode = "refuses_all"
        with pytest.raises(VlmError, match=r"HTTP 400.*max_completion_tokens"):
            client.describe(face(), CONTEXT)
        assert len(s.bodies) == 3 and not client.reasoning  # one retry, then as before
    finally:
        s.close()


def test_refusal_shapes():
    assert refuses_sampling_parameters(400, refusal("max_tokens"))
    assert refuses_sampling_parameters(400, refusal("temperature"))
    no_param = json.dumps(
        {"error": {"message": json.loads(refusal("max_tokens"))["error"]["message"]}}
    )
    assert refuses_sampling_parameters(400, no_param.encode())
    assert not refuses_sampling_parameters(400, b'{"error": {"message": "bad image"}}')
    assert not refuses_sampling_parameters(400, b"<html>no</html>")
    assert not refuses_sampling_parameters(400, b'["error"]')
    assert not refuses_sampling_parameters(500, refusal("max_tokens"))


def test_an_empty_reply_cut_by_the_token_budget_says_so():
    body = json.dumps({"choices": [{"message": {"content": ""}, "finish_reason": "length"}]})
    with pytest.raises(VlmError, match="whole token budget"):
        parse_reply(body.encode(), 50)


def test_a_redirect_is_not_followed_so_the_picture_goes_nowhere_else():
    s = VlmServer("redirect")
    try:
        client = VlmClient(settings(s.endpoint))
        with pytest.raises(VlmError, match=r"HTTP 307 redirect to /elsewhere.*not followed"):
            client.describe(face(), CONTEXT)
        assert len(s.bodies) == 1  # the picture was posted to vlm.endpoint only
    finally:
        s.close()


def test_unreachable_endpoint_is_an_error():
    client = VlmClient(settings("http://127.0.0.1:9/v1", timeout_s=1.0))
    with pytest.raises(VlmError, match="unreachable"):
        client.describe(face(), CONTEXT)


def test_parse_reply_trims_and_caps():
    assert parse_reply(ok_reply("a " * 500), 20).endswith("…")
    assert len(parse_reply(ok_reply("a " * 500), 20)) == 20
    parts = json.dumps({"choices": [{"message": {"content": [{"type": "text", "text": "hi"}]}}]})
    assert parse_reply(parts.encode(), 50) == "hi"
    with pytest.raises(VlmError, match="empty"):
        parse_reply(ok_reply("   "), 50)


def test_urls_and_images():
    assert completions_url("https://h/v1/") == "https://h/v1/chat/completions"
    assert completions_url("https://h/v1/chat/completions") == "https://h/v1/chat/completions"
    small = encode_image(np.zeros((10, 20, 3), np.uint8), 256)
    assert small.startswith("data:image/jpeg;base64,")
    body = build_request(settings("http://x/v1"), small, CONTEXT)
    assert body["messages"][0]["content"][1]["image_url"]["url"] == small


def test_config_is_checked_up_front(tmp_path):
    with pytest.raises(Exception, match="endpoint") as info:
        load_config(None, ["vlm.enabled=true", "vlm.model=m"])
    assert "[vlm] endpoint" in str(info.value)
    with pytest.raises(Exception, match="prompt"):
        load_config(None, ["vlm.prompt=about {face}"])
    assert not load_config(None, []).vlm.enabled  # off unless asked for


# ------------------------------------------------------------------------ worker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert predicate()


def test_triggers_interval_change_and_min_gap(tmp_path, server):
    cfg = settings(server.endpoint, interval_s=60.0, min_gap_s=10.0, on_change=True)
    worker = VlmWorker(cfg, str(tmp_path), VlmClient(cfg))
    assert not worker.wants(0.0, None)  # no face, no request
    assert worker.wants(0.0, "sad")
    worker.offer(face(), CONTEXT, now=0.0)
    assert not worker.wants(5.0, "happy")  # changed, but within min_gap
    assert worker.wants(11.0, "happy")  # changed, gap respected
    assert not worker.wants(11.0, "sad")  # same emotion, interval not up
    assert worker.wants(61.0, "sad")  # interval


def test_worker_stores_replies_and_status_never_images(tmp_path, server):
    cfg = settings(server.endpoint)
    worker = VlmWorker(cfg, str(tmp_path), VlmClient(cfg))
    worker.start()
    try:
        worker.offer(face(), CONTEXT, now=time.monotonic())
        wait_for(lambda: worker.status.last is not None)
    finally:
        worker.stop()
    snap = worker.snapshot()["vlm"]
    assert snap["last"]["text"].startswith("A person") and snap["last"]["emotion"] == "sad"
    assert snap["breaker"] == "closed" and snap["requests"] == 1
    db = sqlite3.connect(tmp_path / "appliance.db")
    rows = db.execute("SELECT emotion, reply, latency_ms, model FROM vlm_notes").fetchall()
    assert rows[0][0] == "sad" and rows[0][1].startswith("A person") and rows[0][3] == "test-vlm"
    columns = {r[1] for r in db.execute("PRAGMA table_info(vlm_notes)")}
    assert not columns & {"image", "jpeg", "frame"}


def retry_wait(worker: VlmWorker, clock: FakeClock) -> float:
    return worker.status.retry_at - clock.now


def test_failures_back_off_then_open_the_breaker(tmp_path):
    s = VlmServer("500")
    clock = FakeClock()
    try:
        cfg = settings(s.endpoint, interval_s=600.0, min_gap_s=1.0)
        worker = VlmWorker(cfg, str(tmp_path), VlmClient(cfg), clock=clock)
        waits = []
        for _ in range(BREAKER_FAILURES):
            assert worker.wants(clock.now, "sad")
            worker.offer(face(), CONTEXT, clock.now)
            assert worker.handle_pending()
            waits.append(retry_wait(worker, clock))
            clock.now = worker.status.retry_at  # retry as soon as allowed
        assert waits[:2] == [5.0, 10.0]  # backoff
        assert worker.status.breaker == "open" and waits[2] == 60.0
        assert not worker.wants(clock.now - 1, "happy")  # open: nothing is sent
        assert worker.snapshot()["vlm"]["breaker"] == "half-open"  # cooled down
        s.mode = "answer"
        assert worker.wants(clock.now, "sad")
        worker.offer(face(), CONTEXT, clock.now)
        assert worker.handle_pending()
        assert worker.snapshot()["vlm"]["breaker"] == "closed"
        assert worker.status.failures == 0 and worker.status.error is None
    finally:
        s.close()


def test_half_open_failure_reopens_with_a_longer_cooldown(tmp_path):
    s = VlmServer("garbage")
    clock = FakeClock()
    try:
        cfg = settings(s.endpoint, min_gap_s=1.0)
        worker = VlmWorker(cfg, str(tmp_path), VlmClient(cfg), clock=clock)
        for _ in range(BREAKER_FAILURES):
            worker.offer(face(), CONTEXT, clock.now)
            worker.handle_pending()
            clock.now = worker.status.retry_at
        worker.offer(face(), CONTEXT, clock.now)
        worker.handle_pending()  # the trial fails
        assert worker.status.breaker == "open" and retry_wait(worker, clock) == 120.0
    finally:
        s.close()


def test_an_offer_made_while_a_failing_request_was_in_flight_is_not_sent(tmp_path):
    """With vlm.timeout_s longer than vlm.min_gap_s the frame loop offers again while a
    request is still in flight; when that request fails and opens the breaker, the
    waiting offer must be dropped, not sent straight into the open breaker (which
    doubled the cool-down)."""
    s = VlmServer("500")
    clock = FakeClock()
    try:
        cfg = settings(s.endpoint, interval_s=600.0, min_gap_s=1.0)
        worker = VlmWorker(cfg, str(tmp_path), VlmClient(cfg), clock=clock)
        for _ in range(BREAKER_FAILURES - 1):
            worker.offer(face(), CONTEXT, clock.now)
            worker.handle_pending()
            clock.now = worker.status.retry_at
        worker.offer(face(), CONTEXT, clock.now)
        original = worker.client.describe

        def in_flight(image, context):  # the frame loop offers during the request
            worker.offer(face(), CONTEXT, clock.now + 2.0)
            return original(image, context)

        worker.client.describe = in_flight
        worker.handle_pending()  # third failure: the breaker opens
        assert worker.status.breaker == "open"
        sent = len(s.bodies)
        assert not worker.handle_pending()  # the offer made meanwhile is dropped
        assert len(s.bodies) == sent
        assert retry_wait(worker, clock) == 60.0 and worker.status.breaker == "open"
    finally:
        s.close()


def test_newest_offer_wins(tmp_path, server):
    cfg = settings(server.endpoint)
    worker = VlmWorker(cfg, str(tmp_path), VlmClient(cfg))
    worker.offer(np.zeros((8, 8, 3), np.uint8), {**CONTEXT, "emotion": "sad"}, 0.0)
    worker.offer(np.zeros((8, 8, 3), np.uint8), {**CONTEXT, "emotion": "happy"}, 1.0)
    assert worker.handle_pending()
    assert worker.snapshot()["vlm"]["last"]["emotion"] == "happy"
    assert not worker.handle_pending()  # the older offer was replaced, not queued


# ------------------------------------------------------------------------ frame loop


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "faces.mp4"
    faces = make_face_clip.list_faces(FIXTURE_FACES)[::5]
    make_face_clip.compose(faces, path, frames_per_face=40, seed=5)  # 280 frames
    return path


def timed_run(config, clip) -> tuple[int, float]:
    from appliance.pipeline import Pipeline
    from appliance.service.daemon import Daemon

    pipeline = Pipeline.from_config(config)
    daemon = Daemon(config, source=str(clip), pipeline=pipeline)
    started = time.perf_counter()
    assert daemon.run() == 0
    assert time.perf_counter() - started < daemon.loop_s + 2.0  # shutdown does not hang
    return daemon.frames, daemon.loop_s


@requires_models
def test_a_hanging_vlm_does_not_hold_up_the_frame_loop(tmp_path):
    """Behaviour, not speed (BENCHMARKS.md has the fps): the server holds the request for
    30 s and the client waits up to 30 s, so a loop that waited on the VLM would do its
    next frame 30 s after the request reached the server. One that does not finishes
    the clip's remaining frames, dozens, while the request is held."""
    from appliance.pipeline import Pipeline
    from appliance.service.daemon import Daemon

    class Held(threading.Event):
        """The server's release: also notes when its handler began to hold a request."""

        def __init__(self) -> None:
            super().__init__()
            self.since: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.since.append(time.monotonic())
            return super().wait(timeout)

    clip = tmp_path / "faces.mp4"
    faces = make_face_clip.list_faces(FIXTURE_FACES)[::5]  # one face of each class
    make_face_clip.compose(faces, clip, frames_per_face=6, seed=5)  # 42 frames
    base = [
        f"storage.state_dir={tmp_path / 'state'}",
        f"service.runtime_dir={tmp_path / 'run'}",
        "music.enabled=false",
    ]
    hanging = VlmServer("hang")
    hanging.release = Held()
    done: list[tuple[int, float]] = []  # (frames so far, when), after each frame

    def watch(result) -> None:  # on the frame loop
        if not hanging.release.since and result.faces and result.smoothed.emotion is not None:
            # this frame was offered (the first request is due at once): let the request
            # reach the server before the loop goes on, however slow the machine
            deadline = time.monotonic() + 30
            while not hanging.release.since and time.monotonic() < deadline:
                time.sleep(0.01)
        done.append((daemon.frames, time.monotonic()))

    try:
        off = load_config(None, base)
        on = load_config(
            None,
            [*base, "vlm.enabled=true", f"vlm.endpoint={hanging.endpoint}", "vlm.model=m",
             "vlm.interval_s=5", "vlm.min_gap_s=1", "vlm.timeout_s=30"],
        )  # fmt: skip
        pipeline = Pipeline.from_config(off)
        quiet = Daemon(off, source=str(clip), pipeline=pipeline)
        assert quiet.run() == 0 and quiet.frames == 42
        assert not hanging.bodies  # enabled = false: nothing left the device
        pipeline.reset()
        daemon = Daemon(on, source=str(clip), pipeline=pipeline, on_result=watch)
        started = time.perf_counter()
        assert daemon.run() == 0 and daemon.frames == 42
        assert time.perf_counter() - started < daemon.loop_s + 2.0  # shutdown does not hang
    finally:
        hanging.close()
    assert hanging.release.since, "the VLM was never asked: the test would prove nothing"
    held_from = hanging.release.since[0]
    after = [frame for frame, at in done if at > held_from]
    assert len(after) >= 20, (after, done)  # the request reached the server early on ...
    assert done[-1][1] - held_from < 15.0, done  # ... and all were done far within its 30 s


def test_world_readable_key_file_is_refused_at_start(tmp_path, server):
    key = tmp_path / "key"
    key.write_text("sk-test")
    key.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--config", str(config), "run", "--source", "demo",
         "--max-frames", "3", "--set", f"storage.state_dir={tmp_path / 's'}",
         "--set", f"service.runtime_dir={tmp_path / 'r'}", "--set", "vlm.enabled=true",
         "--set", f"vlm.endpoint={server.endpoint}", "--set", "vlm.model=m",
         "--set", f"vlm.api_key_file={key}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "world-readable" in result.stderr
    assert not server.bodies
