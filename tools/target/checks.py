#!/usr/bin/env python3
"""Judge what tools/target_check.sh collected from the booted arm64 target.

One line per check, PASS or FAIL with the figures behind it, then what was not
exercised and the time each stage took. Exit 1 when a check failed (or its evidence is
missing: a step that did not run is a FAIL, never a silent PASS), else 0. Standard
library only: it runs on the host, outside the target.

    python3 tools/target/checks.py .cache/target/last
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

UNIT = "emotion-appliance.service"
# Directives of the unit that confine the process, with how `systemctl show` spells
# their effective value. A directive systemd did not take shows up as a mismatch here
# or as a parse warning in the journal (check 2).
HARDENING = (
    "User",
    "Group",
    "SupplementaryGroups",
    "UMask",
    "NoNewPrivileges",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "DevicePolicy",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "ProcSubset",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateNetwork",
    "PrivateUsers",
    "RemoveIPC",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallErrorNumber",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "RestrictAddressFamilies",
)
# Enforced by seccomp filters: under qemu-user they are installed but do not bite.
SECCOMP_DIRECTIVES = (
    "SystemCallFilter",
    "SystemCallArchitectures",
    "SystemCallErrorNumber",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectKernelTunables",
)
SECRET_KEYS = ("WIFI_PSK", "SPOTIFY_CLIENT_SECRET", "VLM_API_KEY", "MQTT_PASSWORD")
# Linux arm64 AT_HWCAP bits a Cortex-A72 (ARMv8.0, a Pi 4's core) lacks
HWCAP_BEYOND_A72 = {
    8: "atomics",
    9: "fphp",
    10: "asimdhp",
    12: "asimdrdm",
    15: "lrcpc",
    20: "asimddp",
    22: "sve",
}
DOCUMENTED_STATUS = {"waiting for camera": 1, "stopped": 1}  # WARNING (README "Commands")
POLL_SLACK_S = 5.0  # the host polls MainPID every second through an emulated systemctl


@dataclass
class Outcome:
    number: int
    title: str
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def need(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.problems.append(problem)
        return condition

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        detail = "; ".join(self.problems if self.problems else self.facts)
        return f"{verdict} {self.number} {self.title}" + (f": {detail}" if detail else "")


def read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def key_values(text: str | None) -> dict[str, str]:
    """KEY=value lines (settings files, `systemctl show`, the script's own records)."""
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value
    return values


def unit_section(text: str, section: str = "Service") -> dict[str, str]:
    """A unit file's section, the last assignment of each key winning (as systemd's
    parser does for single-valued settings); empty assignments kept."""
    values: dict[str, str] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def seconds(show_value: str | None) -> float | None:
    """A `systemctl show` time span ("30s", "1min 30s", "15.500s", "500ms") in seconds."""
    if not show_value:
        return None
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
    total, found = 0.0, False
    for value, unit in re.findall(r"([\d.]+)\s*(us|ms|min|s|h)\b", show_value):
        total += float(value) * units[unit]
        found = True
    return total if found else None


@dataclass
class JournalLine:
    t: float
    source: str
    message: str


JOURNAL_LINE = re.compile(r"^(\d+\.\d+) \S+ ([^:\[]+)(?:\[\d+\])?: (.*)$")


def journal(text: str | None) -> list[JournalLine]:
    """`journalctl -o short-unix` lines; continuation lines join the one before."""
    lines: list[JournalLine] = []
    for raw in (text or "").splitlines():
        match = JOURNAL_LINE.match(raw)
        if match:
            lines.append(JournalLine(float(match[1]), match[2], match[3]))
        elif lines and raw.strip() and not raw.startswith("-- "):
            lines[-1].message += "\n" + raw
    return lines


def first(lines: list[JournalLine], pattern: str, after: float = 0.0) -> JournalLine | None:
    regex = re.compile(pattern)
    return next((j for j in lines if j.t >= after and regex.search(j.message)), None)


# --- 1: the first boot ----------------------------------------------------------------


def check_firstboot(ev: Path) -> Outcome:
    out = Outcome(1, "first boot applied emotion-appliance.txt")
    settings = key_values(read(ev / "settings.txt"))
    boot1, boot2 = ev / "boot1", ev / "boot2"
    if not out.need(bool(settings), "no settings file in the evidence"):
        return out
    unit = key_values(read(boot1 / "firstboot.show"))
    if not out.need(bool(unit), "no first-boot evidence (boot 1 did not come up)"):
        return out
    out.need(
        unit.get("Result") == "success" and unit.get("ExecMainStatus") == "0",
        f"emotion-appliance-firstboot: Result={unit.get('Result')} "
        f"ExecMainStatus={unit.get('ExecMainStatus')}",
    )
    host = settings.get("HOSTNAME", "")
    running = (read(boot1 / "hostname") or "").strip()
    written = (read(boot1 / "files/etc/hostname") or "").strip()
    out.need(
        running == host and written == host,
        f"hostname {running!r} (running), {written!r} (/etc/hostname), not {host!r}",
    )
    keys = (read(boot1 / "files/home/pi/.ssh/authorized_keys") or "").splitlines()
    out.need(settings.get("SSH_PUBKEY", "") in keys, "SSH key not in ~pi/.ssh/authorized_keys")
    config_text = read(boot1 / "files/etc/emotion-appliance/config.toml") or ""
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        config = {}
        out.need(False, f"config.toml does not parse: {exc}")
    spotify, vlm = config.get("spotify", {}), config.get("vlm", {})
    expected = {
        ("spotify", "client_id"): settings.get("SPOTIFY_CLIENT_ID"),
        ("spotify", "device_name"): settings.get("SPOTIFY_DEVICE"),
        ("spotify", "client_secret_file"): "/etc/emotion-appliance/spotify_client_secret",
        ("vlm", "endpoint"): settings.get("VLM_ENDPOINT"),
        ("vlm", "model"): settings.get("VLM_MODEL"),
        ("vlm", "enabled"): True,
        ("vlm", "api_key_file"): "/etc/emotion-appliance/vlm_api_key",
    }
    for (section, key), want in expected.items():
        got = (spotify if section == "spotify" else vlm).get(key)
        out.need(got == want, f"config.toml {section}.{key} = {got!r}, not {want!r}")
    for name, key in (
        ("spotify_client_secret", "SPOTIFY_CLIENT_SECRET"),
        ("vlm_api_key", "VLM_API_KEY"),
    ):
        stored = (read(boot1 / "files/etc/emotion-appliance" / name) or "").strip()
        out.need(stored == settings.get(key), f"/etc/emotion-appliance/{name} does not hold it")
    modes = {}
    for line in (read(boot1 / "stat.txt") or "").splitlines():
        parts = line.split()
        if len(parts) == 4:
            modes[parts[0]] = " ".join(parts[1:])
    for path, want in {
        "/home/pi/.ssh/authorized_keys": "600 pi",
        "/etc/emotion-appliance/config.toml": "640 root emotion-appliance",
        "/etc/emotion-appliance/vlm_api_key": "640 root emotion-appliance",
        "/etc/emotion-appliance/spotify_client_secret": "640 root emotion-appliance",
        "/etc/NetworkManager/system-connections/emotion-appliance-wifi.nmconnection": "600 root",
    }.items():
        got = modes.get(path, "missing")
        out.need(got.startswith(want), f"{path}: {got}, not {want}")
    applied = read(boot1 / "files/boot/firmware/emotion-appliance.txt.applied")
    manifest1 = read(boot1 / "manifest.txt") or ""
    out.need(
        "boot/firmware/emotion-appliance.txt absent" in manifest1,
        "emotion-appliance.txt still on the boot partition",
    )
    password = urlsplit(settings.get("VLM_ENDPOINT", "")).password
    if out.need(applied is not None, "no emotion-appliance.txt.applied"):
        secrets = [settings[k] for k in SECRET_KEYS if settings.get(k)]
        secrets += [password] if password else []
        leaked = [s for s in secrets if s in applied]
        out.need(not leaked, f"{len(leaked)} secret value(s) left in the .applied file")
        for key in SECRET_KEYS:
            if settings.get(key):
                out.need(
                    f"# {key} was applied and removed" in applied,
                    f"{key} not marked as removed in the .applied file",
                )
    # a second boot: the unit is skipped and nothing it wrote changes
    second = key_values(read(boot2 / "firstboot.show"))
    manifest2 = read(boot2 / "manifest.txt")
    if out.need(bool(second) and manifest2 is not None, "no evidence from a second boot"):
        out.need(
            second.get("ConditionResult") == "no",
            f"second boot: the unit's condition was {second.get('ConditionResult')!r}, not skipped",
        )
        changed = sorted(set(manifest1.splitlines()) ^ set(manifest2.splitlines()))
        names = sorted({line.split()[0] for line in changed})
        out.need(not changed, f"second boot changed {', '.join(names)}")
    out.facts.append(
        f"hostname {host}, SSH key, Spotify client id/secret/device, VLM endpoint/model/key "
        f"applied; {sum(1 for k in SECRET_KEYS if settings.get(k))} secrets scrubbed"
        f"{' (and the endpoint password)' if password else ''}, file renamed .applied; "
        "second boot: unit skipped, "
        f"{len(manifest1.splitlines())} files unchanged"
    )
    return out


# --- 2: the service, its hardening, READY/STATUS and `status` -------------------------


def proc_fields(text: str | None) -> dict[str, str]:
    return {
        k: v.strip()
        for k, v in (line.split(":", 1) for line in (text or "").splitlines() if ":" in line)
    }


def mounts(text: str | None) -> dict[str, set[str]]:
    """mountinfo: mount point -> its options (per-mount and superblock)."""
    found: dict[str, set[str]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) > 6 and " - " in line:
            after = line.split(" - ", 1)[1].split()
            found[parts[4]] = set(parts[5].split(",")) | set(
                after[2].split(",") if len(after) > 2 else []
            )
    return found


def same_setting(name: str, want: str, got: str | None) -> bool:
    if got is None:
        return False
    if name in ("SystemCallFilter",):
        return bool(got.strip()) and not got.startswith("~")  # an allow-list was built
    if name == "SystemCallErrorNumber":
        return got in (want, "1" if want == "EPERM" else want)
    if name in ("RestrictAddressFamilies", "SupplementaryGroups"):
        return set(want.split()) == set(got.split())
    if name in ("CapabilityBoundingSet", "AmbientCapabilities") and want == "":
        return got.strip() == ""
    if want in ("yes", "true", "on", "1"):
        return got == "yes"
    if want in ("no", "false", "off", "0"):
        return got == "no"
    if name == "UMask":
        return got.lstrip("0") == want.lstrip("0")
    return got == want


def seccomp_enforced(ev: Path) -> bool:
    """Filters installed (Seccomp: 2) and biting: under qemu-user systemd installs its
    arm64 filters on the emulator, whose x86-64 system calls they let through; a probe
    service denied openat tells (seccomp-probe.txt)."""
    installed = proc_fields(read(ev / "proc-status.txt")).get("Seccomp") == "2"
    return installed and (read(ev / "seccomp-probe.txt") or "").startswith("effective")


def check_service(ev: Path) -> Outcome:
    out = Outcome(2, f"{UNIT} running as its user under the unit's hardening")
    show = key_values(read(ev / "service.show"))
    if not out.need(bool(show), "no evidence: the service was never inspected"):
        return out
    state = f"{show.get('ActiveState')}/{show.get('SubState')}"
    out.need(state == "active/running", f"the unit is {state}, not active/running")
    installed, repo = read(ev / "installed.service"), read(ev / "repo.service")
    out.need(
        installed is not None and installed == repo,
        "the installed unit differs from systemd/emotion-appliance.service",
    )
    unit = unit_section(installed or "")
    checked = [name for name in HARDENING if name in unit]
    wrong = [
        f"{name}={show.get(name)!r} (unit: {unit[name]!r})"
        for name in checked
        if not same_setting(name, unit[name], show.get(name))
    ]
    out.need(not wrong, "not in effect as written: " + ", ".join(wrong))
    log = journal(read(ev / "boot1" / "journal.txt"))
    ignored = [j.message for j in log if re.search(rf"{re.escape(UNIT)}:\d+: ", j.message)]
    out.need(not ignored, "systemd ignored unit lines: " + " | ".join(ignored[:3]))
    proc = proc_fields(read(ev / "proc-status.txt"))
    ids = key_values(read(ev / "service-user.txt"))
    uid, gid = ids.get("uid"), ids.get("gid")
    if out.need(bool(proc) and bool(uid), "no /proc status of the main process"):
        out.need(proc.get("Uid", "").split() == [uid] * 4, f"Uid {proc.get('Uid')}, not {uid}")
        out.need(proc.get("Gid", "").split() == [gid] * 4, f"Gid {proc.get('Gid')}, not {gid}")
        groups = set(proc.get("Groups", "").split())
        want_groups = set(ids.get("groups", "").split())
        out.need(want_groups <= groups, f"groups {sorted(groups)}, not {sorted(want_groups)}")
        out.need(proc.get("NoNewPrivs") == "1", "NoNewPrivs not set")
        for cap in ("CapBnd", "CapEff", "CapPrm", "CapAmb"):
            out.need(int(proc.get(cap, "1"), 16) == 0, f"{cap} {proc.get(cap)}, not empty")
    points = mounts(read(ev / "proc-mountinfo.txt"))
    if out.need(bool(points), "no mount table of the main process"):
        out.need("ro" in points.get("/", set()), "/ is writable (ProtectSystem=strict)")
        for path in ("/home", "/root", "/tmp", "/var/tmp", "/proc/sys"):
            out.need(path in points, f"{path} not mounted over (ProtectHome/PrivateTmp/...)")
        out.need("ro" in points.get("/proc/sys", set()), "/proc/sys writable")
        for path in ("/var/lib/emotion-appliance", "/run/emotion-appliance"):
            out.need("rw" in points.get(path, set()), f"{path} not a writable exception")
    # READY: Type=notify is active only after READY=1, and NotifyAccess=main takes it
    # from the main process alone; STATUS is the daemon's own summary line
    status_text = show.get("StatusText", "")
    out.need(
        show.get("Type") == "notify" and show.get("NotifyAccess") == "main",
        "not Type=notify with NotifyAccess=main",
    )
    out.need(
        bool(re.match(r"^(starting|running|waiting for camera), \d+ frames, ", status_text)),
        f"StatusText {status_text!r} is not the daemon's STATUS line",
    )
    rejected = [j.message for j in log if "reception only permitted for main PID" in j.message]
    out.need(not rejected, "notifications from another process were rejected")
    env = key_values(read(ev / "proc-environ.txt"))
    out.need(
        "WATCHDOG_USEC" in env and "NOTIFY_SOCKET" in env,
        "no NOTIFY_SOCKET/WATCHDOG_USEC in the daemon's environment",
    )
    text = read(ev / "status-pi.txt") or ""
    code = (read(ev / "status-pi.rc") or "").strip()
    head = text.splitlines()[0] if text else "no output"
    want = DOCUMENTED_STATUS["waiting for camera"]
    out.need(
        "WARNING - waiting for camera: " in head and code == str(want),
        f"`status` as pi: exit {code}, {head!r}; documented: WARNING (exit {want}), "
        "waiting for camera",
    )
    hwcap = (read(ev / "hwcap.txt") or "").strip()
    try:
        beyond = [name for bit, name in HWCAP_BEYOND_A72.items() if int(hwcap, 16) >> bit & 1]
        out.need(not beyond, f"the service's CPU has {', '.join(beyond)}: not a Cortex-A72")
    except ValueError:
        out.need(False, f"no HWCAP from a service ({hwcap[:80]!r})")
    enforced = (
        "seccomp filters biting"
        if seccomp_enforced(ev)
        else "seccomp filters installed but not biting under qemu-user (see below)"
    )
    out.facts.append(
        f"active (running) as {show.get('User')} (uid {uid}), {len(checked)} hardening "
        f"directives as written, none ignored; NoNewPrivs, no capabilities, / read-only, "
        f"/home /tmp private; {enforced}; StatusText {status_text!r}; `status` as pi: "
        f"exit {code}, {head[:70]!r}; CPU Cortex-A72 "
        f"(HWCAP {hwcap})"
    )
    return out


# --- 3: the watchdog ------------------------------------------------------------------


def check_watchdog(ev: Path) -> Outcome:
    out = Outcome(3, "a wedged frame loop (SIGSTOP) is restarted by the watchdog")
    rec = key_values(read(ev / "watchdog.txt"))
    show = key_values(read(ev / "service.show"))
    if not out.need(bool(rec) and bool(show), "no evidence: the watchdog step did not run"):
        return out
    dog, delay = seconds(show.get("WatchdogUSec")), seconds(show.get("RestartUSec"))
    if not out.need(dog is not None and delay is not None, "no WatchdogSec/RestartSec"):
        return out
    assert dog is not None and delay is not None
    stopped = float(rec["sigstop_at"])
    log = journal(read(ev / "watchdog.journal"))
    fired = first(log, r"[Ww]atchdog timeout", stopped)
    exited = first(log, r"Main process exited", fired.t if fired else stopped)
    scheduled = first(log, r"Scheduled restart job", exited.t if exited else stopped)
    out.need(fired is not None, "no watchdog timeout in the journal")
    out.need(
        first(log, r"Failed with result 'watchdog'", stopped) is not None,
        "the unit did not fail with result 'watchdog'",
    )
    out.need(
        bool(rec.get("new_pid")) and rec.get("new_pid") != rec.get("old_pid"), "no new main process"
    )
    before, after = number(rec.get("restarts_before")), number(rec.get("restarts_after"))
    out.need(
        before is not None and after == before + 1,
        f"NRestarts {rec.get('restarts_before')} -> {rec.get('restarts_after')}",
    )
    if fired and exited and scheduled and rec.get("new_pid_seen_at"):
        to_fire = fired.t - stopped
        to_exit = exited.t - fired.t
        to_restart = scheduled.t - exited.t
        total = float(rec["new_pid_seen_at"]) - stopped
        # the last ping came at most stale_after (WatchdogSec / 2) before the SIGSTOP
        out.need(
            to_fire <= dog + 1,
            f"watchdog fired {to_fire:.1f} s after the SIGSTOP, over WatchdogSec={dog:.0f} s",
        )
        out.need(
            to_restart <= delay + 2,
            f"restart {to_restart:.1f} s after the exit, over RestartSec={delay:.0f} s",
        )
        budget = dog + delay + to_exit + POLL_SLACK_S
        out.need(
            total <= budget,
            f"new process {total:.1f} s after the SIGSTOP, over "
            f"WatchdogSec + RestartSec + {to_exit:.1f} s to die",
        )
        ready = rec.get("ready_again_s", "")
        out.facts.append(
            f"SIGSTOP -> watchdog {to_fire:.1f} s (WatchdogSec={dog:.0f}), abort -> exit "
            f"{to_exit:.1f} s, exit -> restart {to_restart:.1f} s (RestartSec={delay:.0f}), "
            f"new pid seen {total:.1f} s after the SIGSTOP; NRestarts {before:.0f} -> "
            f"{after:.0f}; READY again {ready} s later"
        )
    else:
        out.need(False, "the journal lacks the watchdog's timeout, the exit or the restart")
    return out


# --- 4: a bad config ------------------------------------------------------------------


def check_bad_config(ev: Path) -> Outcome:
    out = Outcome(4, "a bad config exits 2 and is not restarted")
    rec = key_values(read(ev / "badconfig.txt"))
    if not out.need(bool(rec), "no evidence: the bad-config step did not run"):
        return out
    out.need(rec.get("exec_main_status") == "2", f"exit status {rec.get('exec_main_status')}")
    out.need(
        rec.get("active_state") == "failed" and rec.get("sub_state") == "failed",
        f"{rec.get('active_state')}/{rec.get('sub_state')} after {rec.get('waited_s')} s,"
        " not failed/failed",
    )
    out.need(
        rec.get("restarts_after") == rec.get("restarts_at_failure"),
        f"NRestarts {rec.get('restarts_at_failure')} -> {rec.get('restarts_after')}",
    )
    log = journal(read(ev / "badconfig.journal"))
    # the restart that matters is one after the exit 2; one before it (a start that timed
    # out before the daemon ran, as emulation once gave) is reported, not judged here
    exits = [i for i, j in enumerate(log) if "code=exited, status=2/" in j.message]
    out.need(bool(exits), "no exit with status 2 in the journal")
    after = exits[0] if exits else -1
    restarted = [j for j in log[after + 1 :] if "Scheduled restart job" in j.message]
    out.need(not restarted, "systemd scheduled a restart after the exit 2")
    before = [j for j in log[: max(after, 0)] if "Scheduled restart job" in j.message]
    if before:
        timed_out = any("start operation timed out" in j.message for j in log[: after + 1])
        out.facts.append(
            f"{len(before)} restart(s) before the exit 2"
            + (" (a start that timed out before the daemon ran)" if timed_out else "")
        )
    error = next(
        (j.message for j in log if "cammera" in j.message and not j.source.startswith("systemd")),
        None,
    )
    out.need(error is not None, "the config error is not in the journal")
    out.need(
        bool(number(rec.get("ready_again_s"))), "the service did not come back with the good config"
    )
    out.facts.append(
        f"exit 2, {rec.get('active_state')} and NRestarts {rec.get('restarts_after')} "
        f"{rec.get('waited_s')} s later; journal: {(error or '').splitlines()[0][:100]!r}"
    )
    return out


# --- 5: stop --------------------------------------------------------------------------


def check_stop(ev: Path) -> Outcome:
    out = Outcome(5, "systemctl stop within TimeoutStopSec, status stopped")
    rec = key_values(read(ev / "stop.txt"))
    if not out.need(bool(rec), "no evidence: the stop step did not run"):
        return out
    took, limit = number(rec.get("stop_s")), seconds(rec.get("timeout_stop_usec"))
    out.need(rec.get("stop_rc") == "0", f"systemctl stop exit {rec.get('stop_rc')}")
    out.need(
        took is not None and limit is not None and took <= limit,
        f"stop took {took} s, TimeoutStopSec {limit} s",
    )
    out.need(
        rec.get("result") == "success" and rec.get("active_state") == "inactive",
        f"after stop: {rec.get('active_state')}, result {rec.get('result')}",
    )
    log = journal(read(ev / "stop.journal"))
    killed = [j.message for j in log if re.search(r"timed out|SIGKILL|Killing process", j.message)]
    out.need(not killed, "systemd had to kill it: " + " | ".join(killed[:2]))
    text = read(ev / "status-stopped.txt") or ""
    code = (read(ev / "status-stopped.rc") or "").strip()
    head = text.splitlines()[0] if text else ""
    out.need(
        "WARNING - daemon stopped" in head and code == str(DOCUMENTED_STATUS["stopped"]),
        f"`status` after the stop: exit {code}, {head!r}",
    )
    out.facts.append(
        f"stopped in {took} s (TimeoutStopSec={limit:.0f}), result "
        f"{rec.get('result')}; `status`: exit {code}, {head!r}"
    )
    return out


# --- 6: the journal -------------------------------------------------------------------


DENIAL = (
    r"Operation not permitted|Permission denied|Read-only file system|audit|seccomp"
    r"|code=(killed|dumped)"
)
# What the journal shows because the system is emulated in a container, not the appliance
KNOWN = (
    (r"NetworkManager\.service: .*ABRT", "qemu-user: NetworkManager's netlink assertion"),
    (r"Failed to set fd limit", "the container may not raise RLIMIT_NOFILE"),
)
# Units that fail under qemu-user in systemd-nspawn, and why (the first line that says)
UNIT_FAILURE = re.compile(r"Failed to set up|Failed at step|assertion failed")


def failed_units(ev: Path, boot: str) -> list[str]:
    """Units that failed during a boot, each with the line of its journal that says why."""
    log = journal(read(ev / boot / "journal.txt"))
    found = []
    for line in (read(ev / boot / "failed-units.txt") or "").splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.endswith(".service"):
            continue
        stem = name.removesuffix(".service")
        why = next(
            (
                j.message
                for j in log
                if (j.message.startswith(name) or j.source == stem)
                and UNIT_FAILURE.search(j.message)
            ),
            "",
        )
        why = why.splitlines()[0].removeprefix(f"{name}: ") if why else "see its journal"
        found.append(f"{name}: {why[:140]}")
    return found


def native_sandbox(ev: Path, out: Outcome) -> list[str]:
    """The native leg (the same stage on the host's architecture, where seccomp bites):
    the daemon under its own filter, and the calls it makes outside @system-service."""
    native = ev / "native"
    if not native.is_dir():
        out.facts.append("no native run: the filter's denials were not listed")
        return []
    show = key_values(read(native / "service.show"))
    state = f"{show.get('ActiveState')}/{show.get('SubState')}"
    out.need(state == "active/running", f"native: under its own filter the unit is {state}")
    biting = (read(native / "seccomp-probe.txt") or "").startswith("effective")
    text = read(native / "status-pi.txt") or ""
    head = text.splitlines()[0] if text else "no output"
    code = (read(native / "status-pi.rc") or "").strip()
    out.need(
        "WARNING - waiting for camera" in head and code == "1",
        f"native: `status` as pi: exit {code}, {head!r}",
    )
    names = dict(
        line.split(" ", 1)
        for line in (read(native / "syscall-names.txt") or "").splitlines()
        if " " in line
    )
    calls: dict[str, list[str]] = {}
    for line in (read(native / "seccomp-log.txt") or "").splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            count, nr, comm = parts
            calls.setdefault(f"{names.get(nr, '?')} ({nr})", []).append(f"{comm} x{count}")
    logging = bool((read(native / "seccomp-log-probe.txt") or "").strip())
    if not biting:
        out.facts.append("native: seccomp filters do not bite on this host either")
    elif not logging:
        out.facts.append("native: this kernel does not log seccomp: denials not listed")
    else:
        out.facts.append(
            f"native: the filter bites, the daemon runs under it; {len(calls)} system "
            "call(s) outside @system-service (EPERM under the unit), listed below"
        )
    return [f"native {name}: {', '.join(comms)}" for name, comms in sorted(calls.items())]


def check_journal(ev: Path) -> tuple[Outcome, list[str]]:
    out = Outcome(6, "no traceback in any boot's journal; the sandbox's denials")
    denials: list[str] = []
    watchdog = key_values(read(ev / "watchdog.txt"))
    expected_abort = watchdog.get("old_pid", "")
    lines_seen = 0
    boots = ["boot1", "boot2"] + (["native"] if (ev / "native").is_dir() else [])
    for boot in boots:
        text = read(ev / boot / "journal.txt")
        if not out.need(text is not None, f"no journal from {boot}"):
            continue
        log = journal(text)
        lines_seen += len(log)
        if not out.need(bool(log), f"the journal of {boot} is empty"):
            continue
        tracebacks = [j for j in log if "Traceback (most recent call last)" in j.message]
        out.need(
            not tracebacks,
            f"{boot}: {len(tracebacks)} traceback(s), first from {tracebacks[0].source}"
            if tracebacks
            else "",
        )
        sigsys = [j for j in log if re.search(r"status=31/SYS|signal=SYS", j.message)]
        out.need(
            not sigsys,
            f"{boot}: killed by SIGSYS (a SystemCallFilter kill): "
            + " | ".join(j.message for j in sigsys[:2]),
        )
        for j in log:
            if not re.search(DENIAL, j.message):
                continue
            note = next((n for pattern, n in KNOWN if re.search(pattern, j.message)), "")
            if boot == "boot1" and re.search(rf"{re.escape(UNIT)}: .*status=6/ABRT", j.message):
                note = f"expected: check 3's watchdog abort of pid {expected_abort}"
            line = f"{boot} {j.source}: {j.message.splitlines()[0][:150]}"
            denials.append(line + (f" ({note})" if note else ""))
    out.facts.append(
        f"{lines_seen} journal lines over {len(boots)} boots, no traceback, no SIGSYS; "
        f"{len(denials)} denial/kill line(s) listed below"
    )
    return out, native_sandbox(ev, out) + denials


def not_exercised(ev: Path) -> list[str]:
    items = []
    packages = (read(ev / "not-exercised-packages") or "").split()
    if packages:
        items.append(
            f"Raspberry Pi archive packages of the stage: {', '.join(packages)} "
            "(not in Debian: picamera2/libcamera capture and lgpio buttons/LEDs)"
        )
    items.append(
        "raspi-config (Raspberry Pi archive): WIFI_COUNTRY left unset, the network "
        "saved, the first boot warns as documented"
    )
    items.append(
        "a camera, GPIO, the Pi's kernel, firmware, SD card and boot partition (FAT): "
        "the container has no /dev/video0; /boot/firmware is a directory"
    )
    items.append("the RealSense path on arm64 (pyrealsense2 has no aarch64 wheel)")
    items.append(
        "systemd-python (the pi extra: sdist only on aarch64): the daemon speaks the "
        "notify protocol itself"
    )
    if not seccomp_enforced(ev):
        items.append(
            "the seccomp-based directives (" + ", ".join(SECCOMP_DIRECTIVES[:9]) + "): "
            "systemd installs them, but built for arm64 they let the emulator's x86-64 "
            "system calls through (a probe service denied openat still read a file), so "
            "no denial or SIGSYS can show here"
            + (
                " (exercised natively instead: check 6)"
                if (read(ev / "native" / "seccomp-probe.txt") or "").startswith("effective")
                else ""
            )
        )
    items.append(
        "speed: everything ran under qemu-user emulation; its times say nothing about a Pi's"
    )
    return items


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    ev = Path(argv[1])
    outcomes = [
        check_firstboot(ev),
        check_service(ev),
        check_watchdog(ev),
        check_bad_config(ev),
        check_stop(ev),
    ]
    sixth, denials = check_journal(ev)
    outcomes.append(sixth)
    for outcome in outcomes:
        print(outcome.line())
    print("sandbox denials and kills in the journal:" + ("" if denials else " none"))
    for line in denials:
        print(f"  {line}")
    for boot in ("boot1", "boot2"):
        units = failed_units(ev, boot)
        if units:
            ours = any(u.startswith("emotion-appliance") for u in units)
            print(f"units failed in {boot}" + ("" if ours else " (none of the appliance's)") + ":")
            for unit in units:
                print(f"  {unit}")
    harness = (read(ev / "harness.txt") or "").splitlines()
    if harness:
        print("added to the booted root for emulation's sake (not in the image):")
        for line in harness:
            print(f"  - {line}")
    print("not exercised:")
    for item in not_exercised(ev):
        print(f"  - {item}")
    times = key_values(read(ev / "times.txt"))
    if times:
        print("times (s, emulated, nice 19): " + ", ".join(f"{k} {v}" for k, v in times.items()))
    failed = [o.number for o in outcomes if not o.passed]
    print(
        f"target check: {len(outcomes) - len(failed)} PASS, {len(failed)} FAIL"
        + (f" (check {', '.join(map(str, failed))})" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
