"""`emotion-appliance doctor`: check what the appliance needs, one line and one fix each.

Each check passes, fails (with a hint that says what to do) or is skipped (not
configured). The command exits 1 when any check fails, so it also works in scripts.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from appliance.capture import CaptureError, open_source
from appliance.common.process import still_running
from appliance.common.text import printable
from appliance.config import Config
from appliance.config.schema import ServiceConfig, StorageConfig
from appliance.config.secrets import SecretError, read_secret
from appliance.pipeline import models_dir
from appliance.service.status import is_fresh, read_status, stale_after
from appliance.sources import redact
from appliance.store.database import DB_NAME, SchemaError, StoreError, open_database
from appliance.vision.model_card import load_card, resolve_card
from appliance.vision.runtime import ModelError

log = logging.getLogger(__name__)

MIN_FREE_MB = 200
MQTT_TIMEOUT_S = 5.0  # the broker's answer to doctor's login
SERVICE_USER = "emotion-appliance"
# the folders systemd makes (StateDirectory=, RuntimeDirectory=) when the service starts
SYSTEMD_DIRS = (StorageConfig().state_dir, ServiceConfig().runtime_dir)
GPIO_HINT = "stop the other program using that pin, or change the [gpio] key named"
CAMERA_HINT = "connect the camera, check camera.source, and the 'video' group membership"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass, fail, skip
    detail: str
    hint: str = ""

    def line(self) -> str:
        """The printed line: details may quote a server's reply or a file's content,
        so they go through the one sanitiser (--json escapes instead)."""
        text = f"{self.status.upper():<5} {self.name:<11} {printable(self.detail)}"
        fix = self.hint and self.status == "fail"
        return text + (f"\n      fix: {printable(self.hint)}" if fix else "")


def passed(name: str, detail: str) -> Check:
    return Check(name, "pass", detail)


def failed(name: str, detail: str, hint: str) -> Check:
    return Check(name, "fail", detail, hint)


def skipped(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def check_models(config: Config) -> Check:
    names = [config.models.detector, config.models.emotion]
    if config.models.va:
        names.append(config.models.va)
    good, bad = [], []
    for name in names:
        try:
            card = load_card(resolve_card(name, models_dir(config)))
            card.check_file()
            good.append(card.name)
        except ModelError as exc:
            bad.append(str(exc))
    if bad:
        return failed(
            "models",
            "; ".join(bad),
            "run tools/fetch_models.py (BlazeFace) or reinstall the package; a model that "
            "fails its sha256 is damaged",
        )
    return passed("models", f"{', '.join(good)}: files match their cards' sha256")


def running_daemon(config: Config) -> dict | None:
    """The daemon's status when it is running now (a fresh snapshot, not dated in the
    future, whose process is alive), else None. A snapshot without process_start (an
    older daemon's) goes by its age alone."""
    snapshot = read_status(config.service.runtime_dir)
    if not snapshot or snapshot.get("state") not in ("running", "starting", "waiting for camera"):
        return None
    if not is_fresh(snapshot, stale_after(config.service.status_interval_s)):
        return None
    if "process_start" in snapshot and still_running(snapshot) is False:
        return None  # killed: the camera is free again
    return snapshot


def check_camera(config: Config) -> Check:
    spec = config.camera.source
    daemon = running_daemon(config)
    if daemon is not None:
        # it holds the camera (libcamera and most V4L2 drivers admit one user): ask it
        who = f"the running daemon (pid {daemon.get('pid')})"
        if daemon.get("camera_error"):
            return failed("camera", f"{who} reports: {daemon['camera_error']}", CAMERA_HINT)
        return passed(
            "camera",
            f"in use by {who}: {daemon.get('frames', 0)} frames from {daemon.get('source')}",
        )
    try:
        source = open_source(spec, width=config.camera.width, height=config.camera.height)
        source.open()
        try:
            frame = source.read(timeout=5.0)
        finally:
            source.close()
    except CaptureError as exc:
        return failed("camera", str(exc).splitlines()[0], CAMERA_HINT)
    if frame is None:
        # describe(), not spec: a stream URL's password stays out of the report
        return failed(
            "camera", f"{source.describe()}: no frame within 5 s", "check the cable and power"
        )
    height, width = frame.image.shape[:2]
    return passed("camera", f"{source.describe()}: {width}x{height} frame read")


REALSENSE_HINT = (
    "x86_64: pip install pyrealsense2 (the pi extra); a Raspberry Pi: build librealsense with"
    " its Python bindings (README: Sources), or read the D435's colour as v4l2:N (no depth)"
)


def pyrealsense2_origin(rs: object) -> str:
    """Which pyrealsense2 this is: PyPI's wheel (a pip package) or librealsense's own
    build of its Python bindings (no package metadata: `make install` on a Pi)."""
    from importlib import metadata

    where = Path(getattr(rs, "__file__", "") or "?").parent
    version = getattr(rs, "__version__", "")
    try:
        return f"pyrealsense2 {metadata.version('pyrealsense2')} (pip package, {where})"
    except metadata.PackageNotFoundError:
        return f"pyrealsense2 {version or '?'} built from librealsense ({where})"


def v4l2_device_name(spec: str) -> str | None:
    """The kernel's name of a v4l2:N or /dev/videoN camera, if it says."""
    from appliance.sources import V4L2_SPEC

    m = V4L2_SPEC.fullmatch(spec.lower())
    node = f"video{m.group(1)}" if m else Path(spec).name
    try:
        return (Path("/sys/class/video4linux") / node / "name").read_text().strip() or None
    except OSError:
        return None


def check_realsense(config: Config) -> Check:
    """Which RealSense path is in use: pyrealsense2 (PyPI's x86_64 wheel, or librealsense
    built with its Python bindings on a Pi), with depth; or a D435's colour stream read as
    a UVC camera through V4L2, without depth. pyrealsense2 is imported only when
    camera.source may be a RealSense."""
    from appliance.sources import match_kind

    spec = config.camera.source.strip()
    kind, _ = match_kind(spec)
    name = kind.name if kind is not None else ""
    if name == "v4l2":
        label = v4l2_device_name(spec)
        if label and "realsense" in label.lower():
            return passed(
                "realsense",
                f"{label} through V4L2: colour only, no depth (no distance, no flat-face"
                " check); realsense needs pyrealsense2",
            )
        return skipped("realsense", "camera.source is not a RealSense")
    if name not in ("realsense", "auto"):
        return skipped("realsense", "camera.source is not a RealSense")
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        if name == "auto":
            return skipped(
                "realsense", f"pyrealsense2 not installed ({exc}): auto does not use a RealSense"
            )
        return failed("realsense", f"pyrealsense2 not importable: {exc}", REALSENSE_HINT)
    return passed("realsense", f"{pyrealsense2_origin(rs)}: colour and depth")


AS_SERVICE_USER = f"run doctor as the service user: sudo -u {SERVICE_USER} emotion-appliance doctor"


def _exists(path: Path) -> bool:
    """Whether anything is at path; OSError when this user may not even look (EACCES)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _nearest_existing(path: Path) -> Path:
    """path itself or its closest ancestor that exists: where a mkdir would start."""
    path = path.absolute()
    for candidate in (path, *path.parents):
        if _exists(candidate):
            return candidate
    return Path(path.anchor)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def check_dir(name: str, folder: str, key: str) -> Check:
    """Can the daemon's user write here? Answered with os.access, never by creating
    anything: doctor runs as other users too, and a folder it made would have the wrong
    owner (or appear wherever a mistaken key points)."""
    label, path = f"{name} dir", Path(folder)
    try:
        if not _exists(path):
            return _absent_dir(label, path)
        if not path.is_dir():
            return failed(label, f"{path}: not a folder", f"move it aside, or change {key}")
        if not _writable(path):
            hint = f"sudo chown {SERVICE_USER}: {path} (the service creates it itself)"
            return failed(label, f"{path}: not writable by this user", hint)
        free_mb = shutil.disk_usage(path).free / 2**20
    except OSError as exc:
        return failed(label, f"{path}: {exc.strerror or exc}", AS_SERVICE_USER)
    if name == "state" and free_mb < MIN_FREE_MB:
        hint = f"free space on that filesystem (at least {MIN_FREE_MB} MB)"
        return failed(label, f"{path}: only {free_mb:.0f} MB free", hint)
    return passed(label, f"{path}: writable, {free_mb:.0f} MB free")


def _absent_dir(label: str, path: Path) -> Check:
    """A folder not made yet is no fault while whoever makes it can: the daemon (when its
    parent is writable) or systemd (the unit's StateDirectory= and RuntimeDirectory=)."""
    create = f"sudo install -d -o {SERVICE_USER} -g {SERVICE_USER} -m 0750 {path}"
    parent = _nearest_existing(path)
    if not parent.is_dir():
        return failed(label, f"{path}: absent, and {parent} is not a folder", create)
    if _writable(parent):
        free_mb = shutil.disk_usage(parent).free / 2**20
        detail = f"absent; the daemon creates it on its first run ({parent} is writable"
        return passed(label, f"{path}: {detail}, {free_mb:.0f} MB free)")
    if str(path) in SYSTEMD_DIRS:
        return skipped(label, f"{path}: absent until the service starts (systemd makes it)")
    return failed(label, f"{path}: absent, and {parent} is not writable by this user", create)


def check_storage(config: Config) -> list[Check]:
    state = check_dir("state", config.storage.state_dir, "storage.state_dir")
    runtime = check_dir("runtime", config.service.runtime_dir, "service.runtime_dir")
    checks = [state, runtime]
    path = Path(config.storage.state_dir) / DB_NAME
    try:
        present = _exists(path)
    except OSError:
        present = True  # cannot look: opening it says why
    if not present:
        if state.status == "fail":
            checks.append(skipped("database", f"{path}: absent (see the state dir)"))
        else:  # a fresh install: nothing is wrong, and nothing to look at yet
            detail = "absent; the daemon creates it on its first run (so does catalog import)"
            checks.append(passed("database", f"{path}: {detail}"))
        checks.append(_catalog_check(config, 0))
        return checks
    try:
        db = open_database(config.storage.state_dir, readonly=True)
        try:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            tracks = db.execute("SELECT count(*) FROM tracks").fetchone()[0]
        finally:
            db.conn.close()
    except SchemaError as exc:
        hint = (
            "upgrade emotion-appliance: a newer version wrote this database"
            if exc.found > exc.expected
            else "sudo systemctl restart emotion-appliance: the daemon upgrades it on start"
        )
        checks.append(failed("database", str(exc), hint))
        return checks
    except (StoreError, sqlite3.Error) as exc:
        readable = os.access(path, os.R_OK)
        hint = "move the damaged appliance.db aside" if readable else AS_SERVICE_USER
        checks.append(failed("database", str(exc), hint))
        return checks
    if result != "ok":
        checks.append(failed("database", f"quick_check: {result}", "restore appliance.db"))
    else:
        checks.append(passed("database", "opens, schema current, quick_check ok"))
    checks.append(_catalog_check(config, tracks))
    return checks


def _catalog_check(config: Config, tracks: int) -> Check:
    if not config.music.enabled:
        return skipped("catalog", "music disabled")
    if tracks == 0:
        return failed("catalog", "no songs", "emotion-appliance catalog import CSV")
    return passed("catalog", f"{tracks} tracks")


def check_spotify(config: Config) -> Check:
    if not config.spotify.client_id:
        return skipped("spotify", "not configured: songs stay in the local queue")
    from appliance.music.spotify import SpotifyError, SpotifyPlayer

    try:
        player = SpotifyPlayer(config.spotify, config.storage.state_dir)
        if not player.logged_in():
            return failed("spotify", "not logged in", "emotion-appliance spotify login")
        devices = player.devices()
    except SpotifyError as exc:
        return failed("spotify", str(exc), "check the network; if the login was revoked, "
                      "run emotion-appliance spotify login")  # fmt: skip
    names = ", ".join(str(d.get("name")) for d in devices) or "none online"
    return passed("spotify", f"token ok; Connect devices: {names}")


def check_vlm(config: Config) -> Check:
    settings = config.vlm
    if not settings.enabled:
        return skipped("vlm", "disabled: no image leaves the device")
    if warning := settings.cleartext_warning():  # before any request carries the key
        return failed("vlm", warning, "set vlm.endpoint to the https:// address")
    headers = {}
    try:
        if settings.api_key_file:
            headers["Authorization"] = "Bearer " + read_secret(settings.api_key_file, "VLM key")
    except SecretError as exc:
        return failed("vlm", str(exc), f"chmod 600 {settings.api_key_file}")
    url = settings.endpoint.rstrip("/").removesuffix("/chat/completions") + "/models"
    shown = redact(url)  # the report is pasted into tickets: no URL password
    try:
        reply = requests.get(url, headers=headers, timeout=min(10.0, settings.timeout_s))
    except requests.RequestException as exc:
        return failed("vlm", f"{shown}: unreachable ({exc.__class__.__name__})",
                      "check vlm.endpoint and the network")  # fmt: skip
    if reply.status_code in (401, 403):
        return failed("vlm", f"{shown}: key refused (HTTP {reply.status_code})",
                      "check vlm.api_key_file")  # fmt: skip
    return passed("vlm", f"{shown}: reachable (HTTP {reply.status_code})")


def check_mqtt(config: Config) -> Check:
    """Connect to the broker once (login, TLS) under a client id of its own, so the
    running daemon's connection is not taken over."""
    settings = config.mqtt
    if not settings.enabled:
        return skipped("mqtt", "disabled: nothing leaves the device")
    if warning := settings.cleartext_warning():  # before the password crosses the network
        return failed("mqtt", warning, "set mqtt.tls = true (and the broker's TLS port)")
    from appliance.link.client import LinkError, connect_blocking, new_client, read_password

    try:
        client = new_client(settings, read_password(settings), f"{settings.device_id}-doctor")
    except SecretError as exc:
        fix = f"chmod 600 {settings.password_file}"
        hint = "check mqtt.ca_file" if "ca_file" in str(exc) else fix
        return failed("mqtt", str(exc), hint)
    try:
        connect_blocking(client, settings, MQTT_TIMEOUT_S)
    except LinkError as exc:
        return failed("mqtt", str(exc), exc.hint)
    finally:
        client.disconnect()
    who = f"as {settings.username}" if settings.username else "anonymously"
    tls = " over TLS, certificate verified" if settings.tls else " (no TLS)"
    return passed("mqtt", f"{settings.shown_broker}: connected {who}{tls}")


def check_gpio(config: Config) -> Check:
    from appliance.hardware.gpio import CLAIM_FAILED, FeedbackPanel

    daemon = running_daemon(config)
    buttons = daemon.get("buttons") if daemon is not None else None
    if isinstance(buttons, str) and config.gpio.enabled:
        # it holds the pins (a second claim would fail): ask it, as for the camera
        who = f"the running daemon (pid {daemon.get('pid')})"
        if buttons == "ready":
            return passed("gpio", f"buttons in use by {who}")
        if CLAIM_FAILED in buttons:
            return failed("gpio", f"{who} reports buttons {buttons}", GPIO_HINT)
        return skipped("gpio", f"{who} reports buttons {buttons}")
    panel = FeedbackPanel(config.gpio, lambda: None, lambda: None)
    try:
        if panel.available:
            return passed("gpio", f"buttons on BCM {config.gpio.like_pin}/{config.gpio.skip_pin}")
        if panel.failed_key is None:  # disabled, no GPIO hardware, gpiozero missing
            return skipped("gpio", panel.reason)
        return failed("gpio", panel.reason, GPIO_HINT)
    finally:
        panel.close()


def run_checks(config: Config, config_label: str, *, camera: bool = True) -> list[Check]:
    checks = [passed("config", f"{config_label}: valid")]
    steps: list[Callable[[], Check | list[Check]]] = [
        lambda: check_models(config),
        (lambda: check_camera(config)) if camera else (lambda: skipped("camera", "--no-camera")),
        lambda: check_realsense(config),
        lambda: check_storage(config),
        lambda: check_spotify(config),
        lambda: check_vlm(config),
        lambda: check_mqtt(config),
        lambda: check_gpio(config),
    ]
    for step in steps:
        try:
            result = step()
        except Exception as exc:  # a doctor must report, never crash
            log.debug("check failed", exc_info=True)
            result = failed("internal", f"{exc.__class__.__name__}: {exc}", "report this bug")
        checks += result if isinstance(result, list) else [result]
    return checks


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
