"""Secrets never leave through the daemon's own output (issue 24): a run with every
secret set, its stderr, stdout, status.json and `config show` grepped for each value."""

from __future__ import annotations

import subprocess
import sys

from support import ROOT, requires_models

from appliance.common.redact import RedactingFormatter, redact_text

VLM_KEY = "sk-vlm-key-4f8a9b2c"
SPOTIFY_SECRET = "spotify-secret-77aa11bb"
URL_PASSWORD = "pa55w0rd-in-url"
CAMERA_TOKEN = "cam-token-9931"


def test_redact_text_hides_urls_and_known_secrets():
    line = f"POST https://u:{URL_PASSWORD}@h/v1 failed; server echoed {VLM_KEY}"
    shown = redact_text(line, [VLM_KEY])
    assert URL_PASSWORD not in shown and VLM_KEY not in shown and "u:***@h" in shown


def test_the_log_formatter_masks_secrets_in_tracebacks_too():
    import logging

    formatter = RedactingFormatter("%(message)s")
    formatter.secrets.add(VLM_KEY)
    try:
        raise RuntimeError(f"bad key {VLM_KEY}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert VLM_KEY not in formatter.format(record)


class Refusing:
    """A VLM endpoint on 127.0.0.1 that answers every request with a 500 quoting it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                outer.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = f"bad request to {self.path} with {self.headers.get('Authorization')}"
                self.send_response(500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@requires_models
def test_a_run_with_every_secret_set_prints_none_of_them(tmp_path):
    vlm_key = tmp_path / "vlm_key"
    vlm_key.write_text(VLM_KEY)
    spotify = tmp_path / "spotify_secret"
    spotify.write_text(SPOTIFY_SECRET)
    for path in (vlm_key, spotify):
        path.chmod(0o600)
    server = Refusing()
    (tmp_path / "none.toml").write_text("")
    settings = [
        "--config", str(tmp_path / "none.toml"),
        "--set", f"storage.state_dir={tmp_path / 'state'}",
        "--set", f"service.runtime_dir={tmp_path / 'run'}",
        "--set", "vlm.enabled=true", "--set", "vlm.model=m", "--set", "vlm.interval_s=5",
        # it answers 500 quoting the request: the error, and urllib3's request line, logged
        "--set", f"vlm.endpoint=http://127.0.0.1:{server.port}/v1?token={CAMERA_TOKEN}",
        "--set", f"vlm.api_key_file={vlm_key}",
        "--set", "spotify.client_id=abc123",
        "--set", f"spotify.client_secret_file={spotify}",
        "-v",
    ]  # fmt: skip
    try:
        run = subprocess.run(
            [sys.executable, "-m", "appliance", *settings, "run", "--source", "demo",
             "--max-frames", "300"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        server.close()
    show = subprocess.run(
        [sys.executable, "-m", "appliance", *settings[:-1], "--set",
         f"camera.source=rtsp://admin:{URL_PASSWORD}@cam/live", "config", "show"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    status = (tmp_path / "run" / "status.json").read_text()
    outputs = {"run stderr": run.stderr, "run stdout": run.stdout, "status.json": status,
               "config show": show.stdout + show.stderr}  # fmt: skip
    assert server.requests >= 1 and "VLM request failed" in run.stderr  # it was tried
    for secret in (VLM_KEY, SPOTIFY_SECRET, URL_PASSWORD, CAMERA_TOKEN):
        for name, text in outputs.items():
            assert secret not in text, f"{secret} leaked into {name}"
