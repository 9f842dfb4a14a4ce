"""tools/target_check.sh without booting anything: when it skips and why, and how
tools/target/checks.py judges the evidence a run collects (fast: no root, no qemu)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

SCRIPT = ROOT / "tools" / "target_check.sh"
HELPERS = ROOT / "tools" / "target"
SETTINGS = HELPERS / "emotion-appliance.txt"

spec = importlib.util.spec_from_file_location("target_checks", HELPERS / "checks.py")
checks = importlib.util.module_from_spec(spec)
sys.modules["target_checks"] = checks
spec.loader.exec_module(checks)


def skip_reason(tmp_path: Path, *, euid: int = 0, binfmt: str | None = None) -> str:
    """The script's own skip_reason with stand-in tools on PATH and a fake binfmt_misc."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "chroot", "mount"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    (bin_dir / "uname").write_text('#!/bin/sh\n[ "$1" = -m ] && echo x86_64 || echo Linux\n')
    (bin_dir / "uname").chmod(0o755)
    binfmt_dir = tmp_path / "binfmt"
    binfmt_dir.mkdir(exist_ok=True)
    if binfmt is not None:
        (binfmt_dir / "register").write_text("")
        if binfmt:
            (binfmt_dir / "qemu-aarch64").write_text(binfmt)
    script = f'source "{SCRIPT}"; MIN_FREE_GB=0; skip_reason'
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TARGET_EUID": str(euid),
        "TARGET_BINFMT_DIR": str(binfmt_dir),
        "TARGET_CACHE": str(tmp_path / "cache"),
    }
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


ENABLED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: "


@pytest.mark.skipif(
    not Path("/proc/filesystems").exists()
    or "overlay" not in Path("/proc/filesystems").read_text(),
    reason="no overlayfs in this kernel: skip_reason stops there",
)
def test_skip_reasons_name_what_is_missing(tmp_path):
    assert skip_reason(tmp_path, euid=1000).startswith("not root")
    assert "binfmt_misc is not mounted" in skip_reason(tmp_path)
    assert "qemu-aarch64 is not registered" in skip_reason(tmp_path, binfmt="")
    assert "without the F flag" in skip_reason(tmp_path, binfmt=ENABLED + "P\n")
    assert skip_reason(tmp_path, binfmt=ENABLED + "PF\n") == ""  # it would run


def test_a_machine_that_cannot_run_it_skips_and_passes(tmp_path):
    """Not root: one SKIPPED line saying why, exit 0 (CI stays green), nothing built."""
    env = {**os.environ, "TARGET_EUID": "1000", "TARGET_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("target check: SKIPPED: not root")
    assert not (tmp_path / "cache").exists()


def test_a_budget_too_short_for_a_cold_cache_skips(tmp_path):
    script = f'source "{SCRIPT}"; budget_reason 5; budget_reason 90; budget_reason ""'
    env = {**os.environ, "TARGET_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and "not enough time" in lines[0] and "built first" in lines[0]


def test_the_stage_installs_from_plain_pypi_when_pip_args_is_empty():
    """piwheels is the image's default, but PIP_ARGS="" must mean plain PyPI (a
    `${PIP_ARGS:-...}` default turned empty back into piwheels)."""
    install = ROOT / "image-build/stage-emotion-appliance/00-install/files/install-appliance.sh"
    line = next(ln for ln in install.read_text().splitlines() if ln.startswith("PIP_ARGS="))
    probe = f'{line}\nprintf "[%s]" "$PIP_ARGS"'
    empty = subprocess.run(["bash", "-c", probe], env={"PIP_ARGS": ""}, capture_output=True)
    unset = subprocess.run(["bash", "-c", probe], env={}, capture_output=True)
    assert empty.stdout == b"[]"
    assert b"piwheels" in unset.stdout


# --- checks.py on evidence ---------------------------------------------------------------

T0 = 1_765_000_000.0
SETTINGS_VALUES = checks.key_values(SETTINGS.read_text())


def jline(t: float, source: str, message: str) -> str:
    return f"{t:.6f} emo-target-check {source}: {message}"


def write_evidence(ev: Path) -> Path:
    """Evidence shaped as a passing run writes it (the formats of systemctl show,
    journalctl -o short-unix, /proc/PID/status and mountinfo)."""
    s = SETTINGS_VALUES
    (ev / "boot1" / "files").mkdir(parents=True)
    (ev / "boot2").mkdir()
    (ev / "settings.txt").write_text(SETTINGS.read_text())
    b1 = ev / "boot1"
    (b1 / "firstboot.show").write_text(
        "Result=success\nExecMainStatus=0\nActiveState=active\nConditionResult=yes\n"
    )
    (b1 / "hostname").write_text(s["HOSTNAME"] + "\n")
    files = b1 / "files"
    for path, text in {
        "etc/hostname": s["HOSTNAME"] + "\n",
        "home/pi/.ssh/authorized_keys": s["SSH_PUBKEY"] + "\n",
        "etc/emotion-appliance/spotify_client_secret": s["SPOTIFY_CLIENT_SECRET"] + "\n",
        "etc/emotion-appliance/vlm_api_key": s["VLM_API_KEY"] + "\n",
        "etc/emotion-appliance/config.toml": (
            f'[spotify]\nclient_id = "{s["SPOTIFY_CLIENT_ID"]}"\n'
            'client_secret_file = "/etc/emotion-appliance/spotify_client_secret"\n'
            f'device_name = "{s["SPOTIFY_DEVICE"]}"\n'
            f'[vlm]\nendpoint = "{s["VLM_ENDPOINT"]}"\nmodel = "{s["VLM_MODEL"]}"\n'
            'enabled = true\napi_key_file = "/etc/emotion-appliance/vlm_api_key"\n'
        ),
        "boot/firmware/emotion-appliance.txt.applied": (
            f"HOSTNAME={s['HOSTNAME']}\n# WIFI_PSK was applied and removed from this file\n"
            "# SPOTIFY_CLIENT_SECRET was applied and removed from this file\n"
            "VLM_ENDPOINT=https://vlmuser:***@vlm.invalid/v1\n"
            "# VLM_API_KEY was applied and removed from this file\n"
        ),
    }.items():
        (files / path).parent.mkdir(parents=True, exist_ok=True)
        (files / path).write_text(text)
    (b1 / "stat.txt").write_text(
        "/home/pi/.ssh/authorized_keys 600 pi pi\n"
        "/etc/emotion-appliance/config.toml 640 root emotion-appliance\n"
        "/etc/emotion-appliance/vlm_api_key 640 root emotion-appliance\n"
        "/etc/emotion-appliance/spotify_client_secret 640 root emotion-appliance\n"
        "/etc/NetworkManager/system-connections/emotion-appliance-wifi.nmconnection"
        " 600 root root\n"
    )
    manifest = (
        "etc/hostname 1a2b 644 0 0\nboot/firmware/emotion-appliance.txt absent\n"
        "boot/firmware/emotion-appliance.txt.applied 3c4d 644 0 0\n"
    )
    (b1 / "manifest.txt").write_text(manifest)
    (ev / "boot2" / "manifest.txt").write_text(manifest)
    (ev / "boot2" / "firstboot.show").write_text("ConditionResult=no\nActiveState=inactive\n")
    unit = (ROOT / "systemd" / "emotion-appliance.service").read_text()
    (ev / "repo.service").write_text(unit)
    (ev / "installed.service").write_text(unit)
    service = checks.unit_section(unit)
    show = {name: service[name] for name in checks.HARDENING if name in service}
    show.update(
        SystemCallFilter="_llseek accept accept4 access read write",
        SystemCallErrorNumber="EPERM",
        ActiveState="active", SubState="running", Type="notify", NotifyAccess="main",
        StatusText="waiting for camera, 0 frames, no face, camera error: camera "
        "/dev/video0 not found",
        WatchdogUSec="30s", RestartUSec="15s", TimeoutStopUSec="15s",
    )  # fmt: skip
    (ev / "service.show").write_text("".join(f"{k}={v}\n" for k, v in show.items()))
    (ev / "service-user.txt").write_text("uid=999\ngid=996\ngroups=996 44 997 998\n")
    (ev / "proc-status.txt").write_text(
        "Name:\tqemu-aarch64-st\nUid:\t999\t999\t999\t999\nGid:\t996\t996\t996\t996\n"
        "Groups:\t44 996 997 998 \nNoNewPrivs:\t1\nSeccomp:\t0\nCapInh:\t0000000000000000\n"
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
        "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n"
    )
    mountinfo = [
        "100 90 0:50 / / ro,relatime shared:1 - overlay overlay rw,lowerdir=x",
        "101 100 0:51 / /home ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=000",
        "102 100 0:51 / /root ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=000",
        "103 100 8:1 /tmp/x/tmp /tmp rw,relatime - ext4 /dev/vda rw",
        "104 100 8:1 /var/tmp/x/tmp /var/tmp rw,relatime - ext4 /dev/vda rw",
        "105 100 0:22 /sys /proc/sys ro,nosuid,nodev - proc proc rw",
        "106 100 8:1 /var/lib/emotion-appliance /var/lib/emotion-appliance rw - ext4 x rw",
        "107 100 0:30 /emotion-appliance /run/emotion-appliance rw - tmpfs tmpfs rw",
    ]
    (ev / "proc-mountinfo.txt").write_text("\n".join(mountinfo) + "\n")
    (ev / "proc-environ.txt").write_text(
        "NOTIFY_SOCKET=/run/systemd/notify\nWATCHDOG_USEC=30000000\n"
    )
    (ev / "status-pi.txt").write_text(
        "EMOTION-APPLIANCE WARNING - waiting for camera: camera /dev/video0 not found\n"
    )
    (ev / "status-pi.rc").write_text("1\n")
    (ev / "hwcap.txt").write_text("8ff\n")  # fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
    (ev / "watchdog.txt").write_text(
        f"sigstop_at={T0}\nold_pid=120\nrestarts_before=0\nnew_pid=250\n"
        f"new_pid_seen_at={T0 + 46.0}\nrestarts_after=1\nready_again_s=61.2\n"
    )
    unit_name = "emotion-appliance.service"
    (ev / "watchdog.journal").write_text(
        "\n".join([
            jline(T0 + 27.9, "systemd[1]", f"{unit_name}: Watchdog timeout (limit 30s)!"),
            jline(T0 + 28.0, "systemd[1]", f"{unit_name}: Killing process 120 "
                  "(emotion-applian) with signal SIGABRT."),
            jline(T0 + 29.5, "systemd[1]", f"{unit_name}: Main process exited, "
                  "code=dumped, status=6/ABRT"),
            jline(T0 + 29.5, "systemd[1]", f"{unit_name}: Failed with result 'watchdog'."),
            jline(T0 + 44.6, "systemd[1]", f"{unit_name}: Scheduled restart job, restart "
                  "counter is at 1."),
            jline(T0 + 44.7, "systemd[1]", "Starting emotion-appliance.service - ..."),
        ]) + "\n"
    )  # fmt: skip
    (ev / "badconfig.txt").write_text(
        f"restart_at={T0 + 200}\nstate_at_failure=failed\nrestarts_at_failure=0\n"
        "waited_s=35\nactive_state=failed\nsub_state=failed\nresult=exit-code\n"
        "exec_main_status=2\nrestarts_after=0\nready_again_s=70.1\n"
    )
    (ev / "badconfig.journal").write_text(
        jline(T0 + 230, "emotion-appliance[300]", "emotion-appliance: config error: "
              "/etc/emotion-appliance/config.toml: unknown section [cammera]") + "\n"
        + jline(T0 + 231, "systemd[1]", f"{unit_name}: Main process exited, code=exited, "
                "status=2/INVALIDARGUMENT") + "\n"
    )  # fmt: skip
    (ev / "stop.txt").write_text(
        "stop_rc=0\nstop_s=3.4\ntimeout_stop_usec=15s\nactive_state=inactive\n"
        "result=success\nexec_main_code=1\nexec_main_status=0\n"
    )
    (ev / "stop.journal").write_text(
        jline(T0 + 400, "systemd[1]", f"Stopping {unit_name} - ...") + "\n"
    )
    (ev / "status-stopped.txt").write_text("EMOTION-APPLIANCE WARNING - daemon stopped\n")
    (ev / "status-stopped.rc").write_text("1\n")
    for boot in ("boot1", "boot2"):
        (ev / boot / "journal.txt").write_text(
            jline(T0, "systemd[1]", "Reached target multi-user.target - Multi-User System.") + "\n"
        )
    (ev / "seccomp-probe.txt").write_text("not effective: a service denied openat read a file\n")
    (ev / "times.txt").write_text("base=cached\ninstall=300\n")
    return ev


def write_native(ev: Path) -> Path:
    """The native leg's evidence: the daemon under its filter, and the calls logged."""
    native = ev / "native"
    native.mkdir()
    (native / "service.show").write_text("ActiveState=active\nSubState=running\n")
    (native / "seccomp-probe.txt").write_text("effective: a service denied openat ...\n")
    (native / "status-pi.txt").write_text(
        "EMOTION-APPLIANCE WARNING - waiting for camera: camera /dev/video0 not found\n"
    )
    (native / "status-pi.rc").write_text("1\n")
    (native / "seccomp-log-probe.txt").write_text("      1 166 umount\n")
    (native / "seccomp-log.txt").write_text("     12 203 emotion-applian\n      1 99 python\n")
    (native / "syscall-names.txt").write_text("203 sched_setaffinity\n99 sysinfo\n")
    (native / "journal.txt").write_text(
        jline(T0, "systemd[1]", "Reached target multi-user.target - Multi-User System.") + "\n"
    )
    return ev


def judge(ev: Path) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, str(HELPERS / "checks.py"), str(ev)], capture_output=True, text=True
    )
    return result.returncode, result.stdout


def verdicts(out: str) -> dict[int, str]:
    found = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) > 1 and parts[0] in ("PASS", "FAIL") and parts[1].isdigit():
            found[int(parts[1])] = parts[0]
    return found


def test_a_passing_run_is_six_passes(tmp_path):
    code, out = judge(write_evidence(tmp_path))
    assert verdicts(out) == dict.fromkeys(range(1, 7), "PASS"), out
    assert code == 0 and "6 PASS, 0 FAIL" in out
    assert "the seccomp-based directives" in out  # not biting under qemu: said, not hidden
    assert "no native run" in out
    assert "python3-picamera2" not in out or "not exercised" in out


def test_the_native_run_lists_the_calls_the_filter_would_deny(tmp_path):
    code, out = judge(write_native(write_evidence(tmp_path)))
    assert code == 0 and "6 PASS, 0 FAIL" in out, out
    assert "native sched_setaffinity (203): emotion-applian x12" in out
    assert "native sysinfo (99): python x1" in out
    assert "exercised natively instead" in out
    ev = tmp_path
    (ev / "native" / "service.show").write_text("ActiveState=failed\nSubState=failed\n")
    code, out = judge(ev)
    assert code == 1 and "FAIL 6" in out and "under its own filter the unit is failed" in out


def test_missing_evidence_is_a_fail_never_a_pass(tmp_path):
    (tmp_path / "boot1").mkdir()
    code, out = judge(tmp_path)
    assert code == 1 and set(verdicts(out).values()) == {"FAIL"}, out


@pytest.mark.parametrize(
    ("number", "path", "change", "why"),
    [
        (1, "boot1/files/boot/firmware/emotion-appliance.txt.applied",
         lambda t: t + "WIFI_PSK=wifi-psk-must-be-scrubbed\n", "secret value"),
        (1, "boot2/manifest.txt", lambda t: t.replace("1a2b", "ffff"), "changed etc/hostname"),
        (2, "proc-status.txt", lambda t: t.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0"),
         "NoNewPrivs"),
        (2, "service.show", lambda t: t.replace("ProtectSystem=strict", "ProtectSystem=no"),
         "ProtectSystem"),
        (2, "status-pi.rc", lambda t: "0\n", "`status` as pi"),
        (2, "hwcap.txt", lambda t: "9ff\n", "atomics"),
        (3, "watchdog.txt", lambda t: t.replace("restarts_after=1", "restarts_after=0"),
         "NRestarts"),
        (3, "watchdog.txt", lambda t: t.replace(f"new_pid_seen_at={T0 + 46.0}",
                                                f"new_pid_seen_at={T0 + 80.0}"), "over"),
        (4, "badconfig.journal", lambda t: t + jline(T0 + 250, "systemd[1]", "x: Scheduled "
                                                     "restart job, restart counter is at 1."),
         "scheduled a restart"),
        (4, "badconfig.txt", lambda t: t.replace("exec_main_status=2", "exec_main_status=1"),
         "exit status 1"),
        (5, "stop.txt", lambda t: t.replace("stop_s=3.4", "stop_s=15.2"), "stop took"),
        (5, "stop.journal", lambda t: t + jline(T0 + 415, "systemd[1]", "x: State "
                                                "'stop-sigterm' timed out. Killing."),
         "had to kill"),
        (6, "boot2/journal.txt", lambda t: t + jline(T0 + 9, "emotion-appliance[88]",
                                                     "Traceback (most recent call last):"),
         "traceback"),
        (6, "boot1/journal.txt", lambda t: t + jline(T0 + 9, "systemd[1]", "x.service: Main "
                                                     "process exited, code=killed, "
                                                     "status=31/SYS"), "SIGSYS"),
    ],
)  # fmt: skip
def test_each_check_fails_on_what_it_guards(tmp_path, number, path, change, why):
    ev = write_evidence(tmp_path)
    (ev / path).write_text(change((ev / path).read_text()))
    code, out = judge(ev)
    found = verdicts(out)
    assert code == 1 and found[number] == "FAIL", out
    assert [n for n, v in found.items() if v == "FAIL"] == [number], out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"FAIL {number} "))
    assert why in line, line


def test_a_restart_before_the_exit_2_is_reported_and_one_after_it_fails(tmp_path):
    """Under emulation a start once timed out before the daemon ran (systemd restarted
    it, as it should): check 4 judges what follows the exit 2, and says what came before."""
    ev = write_evidence(tmp_path)
    journal_path = ev / "badconfig.journal"
    earlier = (
        jline(T0 + 210, "systemd[1]", "x.service: start operation timed out. Terminating.")
        + "\n"
        + jline(
            T0 + 225, "systemd[1]", "x.service: Scheduled restart job, restart counter is at 1."
        )
        + "\n"
    )
    journal_path.write_text(earlier + journal_path.read_text())
    code, out = judge(ev)
    assert code == 0 and "PASS 4 " in out, out
    assert "1 restart(s) before the exit 2 (a start that timed out" in out
    journal_path.write_text(
        journal_path.read_text()
        + jline(
            T0 + 260, "systemd[1]", "x.service: Scheduled restart job, restart counter is at 2."
        )
        + "\n"
    )
    code, out = judge(ev)
    assert code == 1 and "scheduled a restart after the exit 2" in out


def test_journal_lines_and_time_spans_parse_as_systemd_writes_them():
    text = "\n".join([
        jline(T0, "systemd[1]", "a.service: Main process exited, code=dumped, status=6/ABRT"),
        "    continued on the next line",
        "-- Boot 1234 --",
        jline(T0 + 1, "kernel", "no pid here"),
    ])  # fmt: skip
    lines = checks.journal(text)
    assert [ln.source for ln in lines] == ["systemd", "kernel"]
    assert lines[0].message.endswith("continued on the next line")
    assert checks.seconds("1min 30s") == 90 and checks.seconds("15.500s") == 15.5
    assert checks.seconds("500ms") == 0.5 and checks.seconds("") is None


# --- what the target check found in the first-boot script --------------------------------


def test_firstboot_never_leaves_a_vlm_password_next_to_an_api_key(tmp_path):
    """On the target the appliance refused the config the first boot wrote (exit 2, no
    restart: down for good) when VLM_ENDPOINT carried a user:password and VLM_API_KEY was
    given too. Now neither is applied, the journal says why, and the config passes."""
    from test_image_build import FIRSTBOOT, config_check, firstboot_root, vlm_settings
    from test_image_build import run as run_script

    root, env, boot = firstboot_root(
        tmp_path,
        "VLM_ENDPOINT=https://me:pw@vlm.example.org/v1\nVLM_MODEL=qwen2-vl\nVLM_API_KEY=sk-xyz\n",
    )
    result = run_script(FIRSTBOOT, env, tmp_path)
    assert "user:password and an API key is set too" in result.stderr
    assert vlm_settings(root)["endpoint"] == "" and vlm_settings(root)["api_key_file"] == ""
    assert not (root / "etc/emotion-appliance/vlm_api_key").exists()
    assert config_check(root).returncode == 0
    assert not boot.exists()  # the secrets still leave the boot partition


def test_firstboot_keeps_an_api_key_off_an_endpoint_with_a_password(tmp_path):
    """A key that comes after an endpoint with a password (Basic auth) was applied."""
    from test_image_build import FIRSTBOOT, config_check, firstboot_root, vlm_settings
    from test_image_build import run as run_script

    root, env, boot = firstboot_root(
        tmp_path, "VLM_ENDPOINT=https://me:pw@vlm.example.org/v1\nVLM_MODEL=qwen2-vl\n"
    )
    run_script(FIRSTBOOT, env, tmp_path)
    boot.write_text("VLM_API_KEY=sk-xyz\n")
    result = run_script(FIRSTBOOT, env, tmp_path)
    assert "VLM_API_KEY not stored" in result.stderr
    assert vlm_settings(root)["api_key_file"] == ""
    assert config_check(root).returncode == 0
    # an endpoint without a password takes the key
    boot.write_text("VLM_ENDPOINT=https://vlm.example.org/v1\nVLM_API_KEY=sk-xyz\n"
                    "VLM_MODEL=qwen2-vl\n")  # fmt: skip
    run_script(FIRSTBOOT, env, tmp_path)
    assert vlm_settings(root)["api_key_file"] == "/etc/emotion-appliance/vlm_api_key"


@pytest.mark.parametrize(
    ("step", "tail", "network"),
    [
        ("base", "E: Failed to fetch http://deb.debian.org/debian/pool/main/x.deb  "
         "Temporary failure resolving 'deb.debian.org'", True),
        ("install", "WARNING: Retrying ... ReadTimeoutError(\"HTTPSConnectionPool(host='pypi"
         ".org', port=443): Read timed out.\")\nERROR: No matching distribution", True),
        ("native-install", "ERROR: Could not install packages due to an OSError: "
         "Max retries exceeded with url", True),
        # a real defect of the stage is a FAIL, whatever the network did before it
        ("install", "install-appliance: models missing\n" + "ok\n" * 50, False),
        ("payload", "Temporary failure resolving 'x'", False),  # no download there
    ],
)  # fmt: skip
def test_a_build_step_the_network_broke_skips_and_any_other_failure_fails(
    tmp_path, step, tail, network
):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / f"{step}.log").write_text("earlier lines\n" + tail + "\n")
    result = subprocess.run(
        ["bash", "-c", f'source "{SCRIPT}"; LOGS="{logs}"; network_failure "{step}"'],
        capture_output=True, text=True,
    )  # fmt: skip
    assert (result.returncode == 0) == network
