"""The VLM endpoint's credentials stay out of logs, status.json, `status --json` and the
doctor report; plain http:// to a public host is warned about at startup and fails doctor.
Local servers on 127.0.0.1 only: nothing here connects to a public address."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest
from support import ROOT, cli_settings
from test_publisher import make, wait_for
from test_vlm import CONTEXT, VlmServer, face, settings

from appliance.config import load_config
from appliance.config.schema import cleartext_to_public_host
from appliance.service import doctor
from appliance.service.daemon import Daemon
from appliance.service.status import read_status
from appliance.vlm.client import VlmClient, VlmError
from appliance.vlm.worker import VlmWorker

SECRET = "s3cret"


def with_password(endpoint: str) -> str:
    """http://127.0.0.1:N/v1 -> http://admin:s3cret@127.0.0.1:N/v1"""
    return endpoint.replace("http://", f"http://admin:{SECRET}@")


def vlm_config(tmp_path, endpoint: str):
    return load_config(
        None,
        [f"storage.state_dir={tmp_path / 'state'}", f"service.runtime_dir={tmp_path / 'run'}",
         "music.enabled=false", "vlm.enabled=true", f"vlm.endpoint={endpoint}", "vlm.model=m"],
        default_path=tmp_path / "none.toml",
    )  # fmt: skip


@pytest.fixture
def server():
    s = VlmServer()
    yield s
    s.close()


def test_status_json_and_status_json_command_hide_the_password(tmp_path, server):
    cfg = settings(with_password(server.endpoint))
    worker = VlmWorker(cfg, str(tmp_path / "state"), VlmClient(cfg))
    _, publisher = make(tmp_path, tmp_path / "state", companions=[worker])
    worker.start()
    publisher.start()
    try:
        worker.offer(face(), CONTEXT, now=time.monotonic())
        wait_for(lambda: worker.status.last is not None)
        assert worker.status.last is not None  # the password in the URL still authenticates
        assert server.headers[0]["Authorization"].startswith("Basic ")
        assert wait_for(lambda: "vlm" in (read_status(tmp_path / "run") or {}))
    finally:
        publisher.stop()
        worker.stop()
    on_disk = (tmp_path / "run" / "status.json").read_text()
    assert SECRET not in on_disk and "admin:***@127.0.0.1" in on_disk
    shown = subprocess.run(
        [sys.executable, "-m", "appliance", "status", "--json",
         *cli_settings(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    assert "vlm" in shown and SECRET not in shown


def test_startup_log_hides_the_password(tmp_path, caplog, server):
    caplog.set_level(logging.INFO)
    worker = Daemon(vlm_config(tmp_path, with_password(server.endpoint)))._vlm()
    assert worker is not None
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "VLM context from http://admin:***@127.0.0.1" in text and SECRET not in text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # local: no warning


def test_plain_http_to_a_public_host_is_warned_about_at_startup(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    Daemon(vlm_config(tmp_path, f"http://admin:{SECRET}@vlm.example.org/v1"))._vlm()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "plain http://" in warning and "unencrypted" in warning
    assert "admin:***@vlm.example.org" in warning and SECRET not in warning


def test_doctor_report_hides_the_password(tmp_path, server):
    check = doctor.check_vlm(vlm_config(tmp_path, with_password(server.endpoint)))
    assert check.status == "pass" and "admin:***@127.0.0.1" in check.detail
    assert SECRET not in json.dumps(doctor.as_json([check]))
    check = doctor.check_vlm(vlm_config(tmp_path, with_password("http://127.0.0.1:9/v1")))
    assert check.status == "fail" and "unreachable" in check.detail
    assert SECRET not in check.detail


def test_doctor_fails_plain_http_to_a_public_host_without_sending_anything(tmp_path, monkeypatch):
    def no_request(*args, **kwargs):
        raise AssertionError("doctor sent a request over plain http to a public host")

    monkeypatch.setattr(doctor.requests, "get", no_request)
    check = doctor.check_vlm(vlm_config(tmp_path, f"http://admin:{SECRET}@8.8.8.8/v1"))
    assert check.status == "fail" and "unencrypted" in check.detail
    assert "https://" in check.hint and SECRET not in check.detail


def test_a_redirect_to_a_url_with_a_password_is_reported_without_it():
    s = VlmServer("redirect")
    try:
        s.location = f"http://bob:{SECRET}@elsewhere/v1/chat/completions"
        client = VlmClient(settings(s.endpoint))
        with pytest.raises(VlmError, match=r"redirect to http://bob:\*\*\*@elsewhere") as info:
            client.describe(face(), CONTEXT)
        assert SECRET not in str(info.value)
    finally:
        s.close()


@pytest.mark.parametrize(
    ("endpoint", "public"),
    [
        ("http://127.0.0.1:8000/v1", False),
        ("http://localhost:11434/v1", False),
        ("http://[::1]:8000/v1", False),
        ("http://192.168.1.20:11434/v1", False),
        ("http://10.0.0.5/v1", False),
        ("http://100.101.102.103/v1", False),  # CGNAT / Tailscale
        ("http://ollama:11434/v1", False),  # single-label LAN name
        ("http://gpu-box.local/v1", False),
        ("https://api.openai.com/v1", False),  # TLS: fine anywhere
        ("http://api.example.org/v1", True),
        ("HTTP://API.Example.org/v1", True),
        ("http://8.8.8.8/v1", True),
        ("http://[2a00:1450:4001::1]/v1", True),
        ("http://user:pw@vlm.example.org/v1", True),
    ],
)
def test_which_plain_http_endpoints_are_public(endpoint, public):
    assert cleartext_to_public_host(endpoint) is public


def test_a_url_password_and_an_api_key_together_are_a_config_error(tmp_path):
    """requests turned the URL's user:password into Basic auth and the server never got
    the configured Bearer key: one of the two, silently. Now config check says so."""
    from appliance.config import ConfigError, load_config

    key = tmp_path / "key"
    key.write_text("sk-test")
    key.chmod(0o600)
    with pytest.raises(ConfigError, match=r"\[vlm\] endpoint: carries a user:password"):
        load_config(
            None,
            ["vlm.endpoint=https://u:pa55w0rd@vlm.example/v1", f"vlm.api_key_file={key}"],
        )
    load_config(None, ["vlm.endpoint=https://u:pa55w0rd@vlm.example/v1"])  # Basic alone
    load_config(None, ["vlm.endpoint=https://vlm.example/v1", f"vlm.api_key_file={key}"])
