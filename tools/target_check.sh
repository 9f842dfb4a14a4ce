#!/usr/bin/env bash
# The appliance on its target, checked from outside: a Debian bookworm arm64 root
# (Raspberry Pi OS Lite-like) under qemu-user emulation, built and cached under
# .cache/target/, the SD image's stage installed in it exactly as pi-gen runs it, booted
# with systemd-nspawn, and checked from the host (nsenter and the root's files). One line
# PASS/FAIL per check (tools/target/checks.py):
#   1 the first-boot unit applied emotion-appliance.txt, scrubbed it and renamed it; a
#     second boot changes nothing
#   2 emotion-appliance.service active (running) as its user under the unit's hardening,
#     READY and STATUS from the daemon, `status` as pi with its documented exit code
#   3 a frame loop wedged on purpose (SIGSTOP of the daemon from outside) is restarted by
#     the watchdog, and NRestarts counts it
#   4 a bad config exits 2 and is not restarted, the error in the journal
#   5 `systemctl stop` ends within TimeoutStopSec, status "stopped"
#   6 no traceback in either boot's journal; sandbox denials listed
#
#   tools/target_check.sh            # as root; exit 0 all passed or SKIPPED, 1 a FAIL
#   tools/target_check.sh --rebuild  # drop the cached roots first
#   tools/target_check.sh --budget-min 40  # SKIPPED unless a run fits in 40 minutes
#
# Needs root, binfmt_misc with qemu-aarch64 (qemu-user-static, registered with the F
# flag) on a non-arm64 host, debootstrap, systemd-nspawn (systemd-container), overlayfs,
# ~6 GB free, and the network (Debian's archive and PyPI) whenever the cached root or
# installed stage is out of date. Missing tools are installed with apt-get when it is
# there; anything else missing prints "SKIPPED: why" and exits 0. Every heavy step runs
# under `nice -n 19`. QEMU_CPU=cortex-a72 (a Pi 4's core, ARMv8.0): an instruction a Pi
# lacks is SIGILL. Piwheels is not reachable from CI: the stage's install script runs with
# PIP_ARGS="" (plain PyPI; a real image build uses piwheels), unless PIP_ARGS is given.
# Times: README "Flash and boot" and BENCHMARKS.md ("Target check under emulation").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPERS="$ROOT/tools/target"
CACHE="${TARGET_CACHE:-$ROOT/.cache/target}"
SUITE=bookworm
MIRROR="${TARGET_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${TARGET_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
BINFMT="${TARGET_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}"
TARGET_EUID="${TARGET_EUID:-$EUID}"
MIN_FREE_GB=6
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
NICE=(nice -n 19)
UNIT=emotion-appliance.service
# What pi-gen's stage0-2 give Raspberry Pi OS Lite that our stage and units rely on
# (systemd, D-Bus for hostnamectl, SSH, mDNS, sudo), from Debian.
BASE_PACKAGES="systemd systemd-sysv systemd-timesyncd dbus udev sudo ssh avahi-daemon
ca-certificates curl less rsync iproute2 procps psmisc kmod fake-hwclock"
CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[%(%T)T] target check: %s\n' -1 "$*"; }
skip() {
    echo "target check: SKIPPED: $*"
    exit 0
}

# --- preflight --------------------------------------------------------------------

# Why this machine cannot run the check ("" when it can). Read-only: setup_host has
# already tried to install what is missing.
skip_reason() {
    if [[ "$(uname -s)" != Linux ]]; then
        echo "not Linux"
        return
    fi
    if [[ "$TARGET_EUID" != 0 ]]; then
        echo "not root (debootstrap, chroot, overlay mounts and systemd-nspawn need root)"
        return
    fi
    local tool missing=()
    for tool in debootstrap systemd-nspawn nsenter chroot mount; do
        command -v "$tool" > /dev/null || missing+=("$tool")
    done
    if (( ${#missing[@]} )); then
        echo "missing ${missing[*]} (apt-get install debootstrap systemd-container" \
            "qemu-user-static binfmt-support)"
        return
    fi
    if ! grep -qw overlay /proc/filesystems 2> /dev/null; then
        echo "no overlayfs in this kernel"
        return
    fi
    if [[ "$(uname -m)" != aarch64 ]]; then
        if [[ ! -e "$BINFMT/register" ]]; then
            echo "binfmt_misc is not mounted at $BINFMT (and could not be mounted):" \
                "arm64 programs cannot run on this $(uname -m) host"
            return
        fi
        if [[ ! -e "$BINFMT/qemu-aarch64" ]] || ! grep -qx enabled "$BINFMT/qemu-aarch64"
        then
            echo "qemu-aarch64 is not registered in binfmt_misc (qemu-user-static," \
                "binfmt-support: update-binfmts --enable qemu-aarch64)"
            return
        fi
        if ! grep -q '^flags:.*F' "$BINFMT/qemu-aarch64"; then
            echo "qemu-aarch64 is registered without the F flag: the emulator is not" \
                "found inside a chroot or container"
            return
        fi
    fi
    local free_kb
    mkdir -p "$CACHE"
    free_kb="$(df -Pk "$CACHE" | awk 'NR == 2 {print $4}')"
    if (( free_kb < MIN_FREE_GB * 1024 * 1024 )); then
        echo "less than $MIN_FREE_GB GB free under $CACHE"
        return
    fi
    echo ""
}

# Root only: install the tools, mount binfmt_misc, enable qemu-aarch64. Best effort:
# skip_reason says what is still missing.
setup_host() {
    local want=()
    command -v debootstrap > /dev/null || want+=(debootstrap)
    command -v systemd-nspawn > /dev/null || want+=(systemd-container)
    command -v capsh > /dev/null || want+=(libcap2-bin)
    if [[ "$(uname -m)" != aarch64 ]]; then
        [[ -e /usr/bin/qemu-aarch64-static ]] || want+=(qemu-user-static binfmt-support)
    fi
    if (( ${#want[@]} )) && command -v apt-get > /dev/null; then
        log "installing ${want[*]}"
        "${NICE[@]}" apt-get install -y -qq "${want[@]}" > /dev/null 2>&1 \
            || { apt-get update -qq > /dev/null 2>&1 \
                && "${NICE[@]}" apt-get install -y -qq "${want[@]}" > /dev/null 2>&1; } \
            || true
    fi
    if [[ "$(uname -m)" != aarch64 && "$BINFMT" == /proc/sys/fs/binfmt_misc ]]; then
        [[ -e "$BINFMT/register" ]] \
            || mount -t binfmt_misc binfmt_misc "$BINFMT" 2> /dev/null || true
        if [[ -e "$BINFMT/register" && ! -e "$BINFMT/qemu-aarch64" ]] \
            && command -v update-binfmts > /dev/null; then
            update-binfmts --enable qemu-aarch64 > /dev/null 2>&1 || true
        fi
    fi
}

online() {
    curl -fsS -o /dev/null --max-time 15 "$MIRROR/dists/$SUITE/Release" \
        && curl -fsS -o /dev/null --max-time 15 https://pypi.org/simple/pip/
}

# --- chroot, as pi-gen's on_chroot ------------------------------------------------

mount_chroot() {
    local dir="$1"
    mountpoint -q "$dir/proc" || mount -t proc proc "$dir/proc"
    mountpoint -q "$dir/dev" || mount --bind /dev "$dir/dev"
    mountpoint -q "$dir/dev/pts" || mount --bind /dev/pts "$dir/dev/pts"
    mountpoint -q "$dir/sys" || mount --bind /sys "$dir/sys"
}

# Every mount at or under $1, deepest first.
unmount_under() {
    local dir mounts
    dir="$(realpath -m "$1")"
    mounts="$(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' \
        /proc/self/mountinfo | sort -r)"
    [[ -z "$mounts" ]] && return 0
    local m
    for m in $mounts; do
        umount "$m" 2> /dev/null || umount -l "$m"
    done
}

# `on_chroot` from pi-gen's scripts/common: bash -e in the root, the script on stdin,
# capabilities less cap_setfcap. The environment is the build's, cleaned.
on_chroot() {
    local dir="$1"
    shift
    mount_chroot "$dir"
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2> /dev/null || true
    local cmd=(chroot "$dir" /bin/bash -e "$@")
    if command -v capsh > /dev/null; then
        cmd=(capsh --drop=cap_setfcap "--chroot=$dir/" -- -e "$@")
    fi
    env -i PATH="$CHROOT_PATH" HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        QEMU_CPU="$QEMU_CPU" ${PIP_ARGS+PIP_ARGS="$PIP_ARGS"} \
        ${TARGET_PIP_CERT:+PIP_CERT="$TARGET_PIP_CERT"} "${NICE[@]}" "${cmd[@]}"
}

# A stage package list without comments (pi-gen's remove-comments.sed).
package_list() { sed -e '/^[[:space:]]*#/d' -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1"; }

pi_only() { package_list "$HELPERS/pi-only-packages"; }

# The packages of one list that Debian has (the Raspberry Pi-only ones noted).
debian_packages() {
    local pkg out=()
    for pkg in $(package_list "$1"); do
        if pi_only | grep -qxF "$pkg"; then
            echo "$pkg" >> "$CACHE/not-exercised-packages"
        else
            out+=("$pkg")
        fi
    done
    echo "${out[*]}"
}

# --- the cached bookworm roots ---------------------------------------------------------
# Two legs: "arm64", the target, emulated (native on an arm64 host), and "native", the
# same stage on this host's own architecture, where seccomp filters bite (under
# qemu-user they let the emulator's system calls through): the sandbox's denials are
# listed from there. use_leg points the functions below at one.
LEG=arm64
DEB_ARCH=arm64
BASE_DIR="$CACHE/base"
INSTALLED_DIR="$CACHE/installed"
EXTRA_PACKAGES=""
use_leg() {
    LEG="$1"
    if [[ "$LEG" == arm64 ]]; then
        DEB_ARCH=arm64
        BASE_DIR="$CACHE/base"
        INSTALLED_DIR="$CACHE/installed"
        EXTRA_PACKAGES=""
    else
        DEB_ARCH="$(dpkg --print-architecture 2> /dev/null || echo amd64)"
        BASE_DIR="$CACHE/native-base"
        INSTALLED_DIR="$CACHE/native-installed"
        # scmp_sys_resolver names the system calls the kernel logs by number
        EXTRA_PACKAGES="seccomp"
    fi
}
emulated() { [[ "$LEG" == arm64 && "$(uname -m)" != aarch64 ]]; }

stage_lists() { find "$ROOT/image-build/stage-emotion-appliance" -name '*-packages*' | sort; }

base_key() {
    {
        echo "$SUITE $DEB_ARCH $MIRROR"
        echo "$BASE_PACKAGES $EXTRA_PACKAGES"
        cat "$HELPERS/pi-os-like.sh" "$HELPERS/pi-only-packages"
        local list
        for list in $(stage_lists); do
            echo "${list#"$ROOT"/}"
            cat "$list"
        done
    } | sha256sum | cut -d' ' -f1
}

build_base() {
    local tmp="$BASE_DIR.tmp" list flags log="$LOGS/$STEP.log"
    unmount_under "$tmp"
    # a build cut short after debootstrap (the network, a signal) goes on from there
    if [[ "$(cat "$tmp/.target-check-base" 2> /dev/null)" != "$SUITE debootstrapped" ]]; then
        rm -rf --one-file-system "$tmp"
        if emulated; then
            log "$LEG base: debootstrap $SUITE $DEB_ARCH (first stage, native)"
            "${NICE[@]}" debootstrap --arch="$DEB_ARCH" --foreign --variant=minbase \
                --include=ca-certificates "$SUITE" "$tmp" "$MIRROR" > "$log" 2>&1
            log "$LEG base: second stage (emulated)"
            env -i PATH="$CHROOT_PATH" QEMU_CPU="$QEMU_CPU" "${NICE[@]}" \
                chroot "$tmp" /debootstrap/debootstrap --second-stage >> "$log" 2>&1
        else
            log "$LEG base: debootstrap $SUITE $DEB_ARCH"
            "${NICE[@]}" debootstrap --arch="$DEB_ARCH" --variant=minbase \
                --include=ca-certificates "$SUITE" "$tmp" "$MIRROR" > "$log" 2>&1
        fi
        echo "$SUITE debootstrapped" > "$tmp/.target-check-base"
    fi
    cat > "$tmp/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main contrib non-free non-free-firmware
deb $MIRROR $SUITE-updates main contrib non-free non-free-firmware
deb $SECURITY_MIRROR $SUITE-security main contrib non-free non-free-firmware
SOURCES
    log "$LEG base: Raspberry Pi OS Lite-like packages and the stage's Debian packages"
    # man-db's index under emulation takes minutes and nothing here reads a man page
    on_chroot "$tmp" >> "$log" 2>&1 <<CHROOT
echo 'man-db man-db/auto-update boolean false' | debconf-set-selections
apt-get update
apt-get install -y ${BASE_PACKAGES//$'\n'/ } $EXTRA_PACKAGES
CHROOT
    # the stage's lists as pi-gen installs them (-nr without Recommends), so that the
    # stage's own package step finds them in place
    for list in $(stage_lists); do
        flags=""
        [[ "$list" == *-packages-nr ]] && flags="--no-install-recommends"
        local pkgs
        pkgs="$(debian_packages "$list")"
        [[ -n "$pkgs" ]] || continue
        echo "apt-get install $flags -y $pkgs" | on_chroot "$tmp" >> "$log" 2>&1
    done
    on_chroot "$tmp" < "$HELPERS/pi-os-like.sh" >> "$log" 2>&1
    echo "apt-get clean" | on_chroot "$tmp" >> "$log" 2>&1
    rm -f "$tmp/.target-check-base"
    unmount_under "$tmp"
    unmount_under "$BASE_DIR"
    rm -rf --one-file-system "$BASE_DIR"
    mv "$tmp" "$BASE_DIR"
    base_key > "$BASE_DIR.key"
}

base_current() { [[ -d "$BASE_DIR" && "$(cat "$BASE_DIR.key" 2> /dev/null)" == "$(base_key)" ]]; }
installed_current() {
    [[ -d "$INSTALLED_DIR" && "$(cat "$INSTALLED_DIR.key" 2> /dev/null)" == "$(install_key)" ]]
}

# --- the stage, installed as pi-gen runs it -----------------------------------------

# What the installed stage depends on: the base, the stage and the package's sources.
install_key() { { cat "$BASE_DIR.key" 2> /dev/null; source_key; } | sha256sum | cut -d' ' -f1; }

source_key() {
    {
        echo "PIP_ARGS=${PIP_ARGS-unset}"
        cd "$ROOT"
        git ls-files -co --exclude-standard -- appliance setup.py pyproject.toml README.md \
            systemd image-build/build.sh image-build/stage-emotion-appliance models \
            2> /dev/null | LC_ALL=C sort | while IFS= read -r f; do
            if [[ -f "$f" ]]; then
                sha256sum "$f"
            fi
        done
        sha256sum models/*.tflite models/*.json 2> /dev/null || true
    } | sha256sum | cut -d' ' -f1
}

# image-build/build.sh's own payload and placement steps, into .cache/target/work.
build_payload() {
    log "payload: build.sh stage_payload and place_stage"
    (
        # shellcheck source=/dev/null  # build.sh, for its functions (its tests cover it)
        source "$ROOT/image-build/build.sh"
        WORK="$CACHE/work"
        mkdir -p "$WORK/pi-gen"
        # build.sh's python3 is the host's: the project's venv has pip and setuptools
        [[ -x "$ROOT/.venv/bin/python3" ]] && PATH="$ROOT/.venv/bin:$PATH"
        renice -n 19 -p "$BASHPID" > /dev/null
        stage_payload
        place_stage
    ) > "$LOGS/payload.log" 2>&1
}

mount_overlay() {
    local merged="$1" upper="$2" work="$3" lower="$4"
    mkdir -p "$merged" "$upper" "$work"
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
}

# pi-gen's run_sub_stage for one sub-stage directory (debconf, packages-nr, packages,
# run.sh on the host, run-chroot.sh in the root).
run_sub_stage() {
    local dir="$1" i pkgs
    pushd "$dir" > /dev/null
    for i in {00..99}; do
        if [[ -f "$i-debconf" ]]; then
            printf 'debconf-set-selections <<SELEOF\n%s\nSELEOF\n' "$(cat "$i-debconf")" \
                | on_chroot "$ROOTFS_DIR"
        fi
        if [[ -f "$i-packages-nr" ]]; then
            pkgs="$(debian_packages "$i-packages-nr")"
            if [[ -n "$pkgs" ]]; then
                echo "apt-get install --no-install-recommends -y $pkgs" \
                    | on_chroot "$ROOTFS_DIR"
            fi
        fi
        if [[ -f "$i-packages" ]]; then
            pkgs="$(debian_packages "$i-packages")"
            if [[ -n "$pkgs" ]]; then
                echo "apt-get install -y $pkgs" | on_chroot "$ROOTFS_DIR"
            fi
        fi
        if [[ -d "$i-patches" ]]; then
            echo "$dir/$i-patches: quilt patches are not supported by the target check" >&2
            return 1
        fi
        if [[ -x "$i-run.sh" ]]; then
            "${NICE[@]}" "./$i-run.sh"
        fi
        if [[ -f "$i-run-chroot.sh" ]]; then
            on_chroot "$ROOTFS_DIR" < "$i-run-chroot.sh"
        fi
    done
    popd > /dev/null
}

# A host behind a TLS-inspecting proxy trusts a CA that Debian's bundle lacks (it is in
# /usr/local/share/ca-certificates, or pip is pointed at a bundle): pip in the root gets
# the host's bundle for the install (PIP_CERT), removed afterwards. The image is not
# changed by it.
HOST_CA=/etc/ssl/certs/target-check-host-ca.pem
host_ca_bundle() {
    local bundle="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}"
    if [[ -z "$bundle" ]] && compgen -G '/usr/local/share/ca-certificates/*.crt' > /dev/null
    then
        bundle=/etc/ssl/certs/ca-certificates.crt
    fi
    [[ -n "$bundle" && -f "$bundle" ]] && echo "$bundle"
    return 0
}

install_stage() {
    local tmp="$INSTALLED_DIR.tmp" stage="$CACHE/work/pi-gen/stage-emotion-appliance"
    local bundle
    unmount_under "$tmp"
    rm -rf --one-file-system "$tmp"
    mount_overlay "$tmp/root" "$tmp/upper" "$tmp/work" "$BASE_DIR"
    export ROOTFS_DIR="$tmp/root"
    bundle="$(host_ca_bundle)"
    if [[ -n "$bundle" ]]; then
        install -m 644 "$bundle" "$ROOTFS_DIR$HOST_CA"
        export TARGET_PIP_CERT="$HOST_CA"
    fi
    log "$LEG install: the stage as pi-gen runs it (PIP_ARGS=${PIP_ARGS-default: piwheels})"
    (
        cd "$stage"
        if [[ -x prerun.sh ]]; then
            ./prerun.sh
        fi
        for sub in "$stage"/*/; do
            if [[ ! -f "$sub/SKIP" ]]; then
                run_sub_stage "$sub"
            fi
        done
    ) > "$LOGS/$STEP.log" 2>&1
    rm -f "$ROOTFS_DIR$HOST_CA"
    unset TARGET_PIP_CERT
    unmount_under "$tmp"
    rm -rf --one-file-system "$tmp/work" "$INSTALLED_DIR"
    mv "$tmp" "$INSTALLED_DIR"
    install_key > "$INSTALLED_DIR.key"
}

# --- booting and looking in from outside --------------------------------------------

RUN="$CACHE/run"
TARGET="$RUN/root"
EVIDENCE="$CACHE/evidence"
NSPAWN_PID=""
LEADER=""

# The container's PID 1 (pid 1 in its own namespace, a child of our systemd-nspawn).
find_leader() {
    local p ns
    for p in /proc/[0-9]*; do
        [[ "$(awk '/^PPid:/ {print $2}' "$p/status" 2> /dev/null)" == "$NSPAWN_PID" ]] \
            || continue
        ns="$(awk '/^NSpid:/ {print $NF}' "$p/status" 2> /dev/null)"
        if [[ "$ns" == 1 ]]; then
            echo "${p#/proc/}"
            return
        fi
    done
}

in_target() {
    nsenter --target "$LEADER" --mount --uts --ipc --net --pid --root --wd -- \
        env -i PATH="$CHROOT_PATH" LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" SYSTEMD_PAGER= \
        SYSTEMD_COLORS=0 TERM=dumb "$@"
}

prop() { in_target systemctl show -P "$2" "$1" 2> /dev/null; }

now() { date +%s.%N; }
since() { awk -v s="$1" -v n="$(now)" 'BEGIN {printf "%.1f\n", n - s}'; }
# true while less than $2 seconds have passed since $1
within() { awk -v s="$1" -v n="$(now)" -v l="$2" 'BEGIN {exit !(n - s < l)}'; }

boot() {
    local name="$1"
    mkdir -p "$EVIDENCE/$name"
    log "$name: booting (systemd-nspawn, emulated)"
    local cpuinfo=()
    if [[ -f "$TARGET/etc/target-check/cpuinfo" ]]; then
        cpuinfo=(--bind-ro=/etc/target-check/cpuinfo:/proc/cpuinfo)
    fi
    "${NICE[@]}" systemd-nspawn --quiet --register=no --keep-unit --private-network \
        --link-journal=no --setenv=QEMU_CPU="$QEMU_CPU" "${cpuinfo[@]}" -D "$TARGET" \
        --boot < /dev/null > "$LOGS/$name-console.log" 2>&1 &
    NSPAWN_PID=$!
    local start waited=0 state=""
    start="$(now)"
    LEADER=""
    while [[ -z "$LEADER" ]] && (( waited < 120 )); do
        kill -0 "$NSPAWN_PID" 2> /dev/null || break
        sleep 1
        waited=$((waited + 1))
        LEADER="$(find_leader)"
    done
    if [[ -z "$LEADER" ]]; then
        tail -n 20 "$LOGS/$name-console.log" >&2
        return 1
    fi
    # the boot is done when the manager says running or degraded (before its bus is up
    # systemctl fails: asked again)
    while within "$start" 900 && kill -0 "$NSPAWN_PID" 2> /dev/null; do
        state="$(in_target systemctl is-system-running 2> /dev/null || true)"
        [[ "$state" == running || "$state" == degraded ]] && break
        sleep 2
    done
    echo "boot_s=$(since "$start")" > "$EVIDENCE/$name/boot.txt"
    echo "system_state=$state" >> "$EVIDENCE/$name/boot.txt"
    in_target systemctl list-units --failed --plain --no-legend \
        >> "$EVIDENCE/$name/failed-units.txt" 2>&1 || true
    [[ "$state" == running || "$state" == degraded ]]
}

poweroff() {
    local name="$1"
    [[ -n "$NSPAWN_PID" ]] || return 0
    in_target journalctl -b --no-pager -o short-unix > "$EVIDENCE/$name/journal.txt" 2>&1 \
        || true
    in_target systemctl poweroff --no-block > /dev/null 2>&1 || true
    local waited=0
    while kill -0 "$NSPAWN_PID" 2> /dev/null && (( waited < 240 )); do
        sleep 1
        waited=$((waited + 1))
    done
    echo "poweroff_s=$waited" >> "$EVIDENCE/$name/boot.txt"
    stop_container
}

stop_container() {
    if [[ -n "$NSPAWN_PID" ]] && kill -0 "$NSPAWN_PID" 2> /dev/null; then
        kill -TERM "$NSPAWN_PID" 2> /dev/null || true
        sleep 10
        [[ -n "$LEADER" ]] && kill -KILL "$LEADER" 2> /dev/null || true
        kill -KILL "$NSPAWN_PID" 2> /dev/null || true
    fi
    [[ -n "$NSPAWN_PID" ]] && wait "$NSPAWN_PID" 2> /dev/null || true
    NSPAWN_PID=""
    LEADER=""
}

# Files the first boot writes, as seen from outside: path, sha256, mode, uid, gid.
FIRSTBOOT_FILES=(
    etc/hostname etc/hosts home/pi/.ssh/authorized_keys
    etc/emotion-appliance/config.toml etc/emotion-appliance/firstboot.applied
    etc/emotion-appliance/spotify_client_secret etc/emotion-appliance/vlm_api_key
    etc/NetworkManager/system-connections/emotion-appliance-wifi.nmconnection
    boot/firmware/emotion-appliance.txt boot/firmware/emotion-appliance.txt.applied
)
manifest() {
    local f
    for f in "${FIRSTBOOT_FILES[@]}"; do
        if [[ -f "$TARGET/$f" ]]; then
            printf '%s %s %s\n' "$f" "$(sha256sum < "$TARGET/$f" | cut -d' ' -f1)" \
                "$(stat -c '%a %u %g' "$TARGET/$f")"
        else
            printf '%s absent\n' "$f"
        fi
    done
}

# Waits until the unit is active with a status line from the daemon; WAITED says how
# many seconds that took ("timeout" past the limit). In this shell, not in a $(...):
# a signal's trap runs between two short commands, not after a long subshell.
WAITED=""
wait_active() {
    local limit="$1" start state text
    start="$(now)"
    while :; do
        state="$(prop "$UNIT" ActiveState)/$(prop "$UNIT" SubState)"
        text="$(prop "$UNIT" StatusText)"
        if [[ "$state" == active/running && -n "$text" ]]; then
            WAITED="$(since "$start")"
            return 0
        fi
        if [[ "$state" == failed/* ]]; then
            WAITED="failed"
            return 1
        fi
        if ! within "$start" "$limit"; then
            WAITED="timeout"
            return 1
        fi
        sleep 2
    done
}

unit_journal() {  # the unit's journal since a host time (both share the clock)
    in_target journalctl --no-pager -o short-unix -u "$UNIT" \
        --since "@${1%.*}" 2> /dev/null || true
}

check_firstboot_and_service() {
    local ev="$EVIDENCE/boot1" main_pid
    in_target systemctl show emotion-appliance-firstboot.service \
        > "$ev/firstboot.show" 2>&1 || true
    in_target journalctl -b --no-pager -o cat -u emotion-appliance-firstboot.service \
        > "$ev/firstboot.journal" 2>&1 || true
    in_target hostname > "$ev/hostname" 2>&1 || true
    mkdir -p "$ev/files"
    local f
    for f in etc/hostname home/pi/.ssh/authorized_keys etc/emotion-appliance/config.toml \
        boot/firmware/emotion-appliance.txt.applied etc/emotion-appliance/vlm_api_key \
        etc/emotion-appliance/spotify_client_secret; do
        [[ -f "$TARGET/$f" ]] && install -D -m 600 "$TARGET/$f" "$ev/files/$f"
    done
    in_target stat -c '%n %a %U %G' /home/pi/.ssh/authorized_keys \
        /etc/emotion-appliance/config.toml /etc/emotion-appliance/vlm_api_key \
        /etc/emotion-appliance/spotify_client_secret \
        /etc/NetworkManager/system-connections/emotion-appliance-wifi.nmconnection \
        > "$ev/stat.txt" 2>&1 || true
    manifest > "$ev/manifest.txt"

    log "check 2: waiting for $UNIT to be active with a status line"
    wait_active 600 || true
    echo "ready_wait_s=$WAITED" > "$EVIDENCE/service.txt"
    in_target systemctl show --all "$UNIT" > "$EVIDENCE/service.show" 2>&1 || true
    main_pid="$(prop "$UNIT" MainPID)"
    if [[ -n "$main_pid" && "$main_pid" != 0 ]]; then
        in_target cat "/proc/$main_pid/status" > "$EVIDENCE/proc-status.txt" 2>&1 || true
        in_target cat "/proc/$main_pid/mountinfo" > "$EVIDENCE/proc-mountinfo.txt" 2>&1 \
            || true
        in_target cat "/proc/$main_pid/environ" | tr '\0' '\n' | grep -E \
            '^(QEMU_CPU|OPENCV_LOG_LEVEL|NOTIFY_SOCKET|WATCHDOG_USEC)=' \
            > "$EVIDENCE/proc-environ.txt" 2>&1 || true
    fi
    {
        echo "uid=$(in_target id -u emotion-appliance)"
        echo "gid=$(in_target id -g emotion-appliance)"
        echo "groups=$(in_target id -G emotion-appliance)"
    } > "$EVIDENCE/service-user.txt" 2>&1 || true
    cp "$TARGET/etc/systemd/system/$UNIT" "$EVIDENCE/installed.service" 2> /dev/null || true
    cp "$ROOT/systemd/$UNIT" "$EVIDENCE/repo.service"
    # the CPU a service sees (qemu's auxv for the guest): Cortex-A72 features only
    in_target systemd-run --quiet --wait --pipe -p User=emotion-appliance \
        /opt/emotion-appliance/venv/bin/python -c \
        'import struct; d = open("/proc/self/auxv", "rb").read()
print(next("%x" % v for k, v in struct.iter_unpack("QQ", d) if k == 16))' \
        > "$EVIDENCE/hwcap.txt" 2>&1 || true
    seccomp_probe "$EVIDENCE"
    status_as_pi "$EVIDENCE"
}

# Whether a service's seccomp filter bites in the booted system (under qemu-user the
# kernel sees the emulator's x86-64 calls, which a filter built for arm64 lets through):
# one line in $1/seccomp-probe.txt.
seccomp_probe() {
    if in_target systemd-run --quiet --wait --pipe -p SystemCallFilter=~openat \
        -p SystemCallErrorNumber=EPERM /bin/cat /etc/hostname > /dev/null 2>&1; then
        echo "not effective: a service denied openat read a file" > "$1/seccomp-probe.txt"
    else
        echo "effective: a service denied openat could not read a file" \
            > "$1/seccomp-probe.txt"
    fi
}

# `emotion-appliance status` as the pi user: its output in $1/status-pi.txt, its exit
# code in $1/status-pi.rc.
status_as_pi() {
    local rc=0
    in_target runuser -u pi -- /usr/local/bin/emotion-appliance status \
        > "$1/status-pi.txt" 2>&1 || rc=$?
    echo "$rc" > "$1/status-pi.rc"
}

check_watchdog() {
    local pid before t0 limit new="" seen="" restarts
    log "check 3: SIGSTOP of the daemon's main process; waiting for the watchdog"
    pid="$(prop "$UNIT" MainPID)"
    before="$(prop "$UNIT" NRestarts)"
    # never `kill -STOP 0` (this script's own process group) or a pid that is not there
    if [[ ! "$pid" =~ ^[0-9]+$ ]] || (( pid <= 1 )); then
        echo "no main process to stop (MainPID=$pid): the service is not running" \
            > "$EVIDENCE/watchdog.skipped"
        return 0
    fi
    t0="$(now)"
    in_target kill -STOP -- "$pid"
    limit=240
    while within "$t0" "$limit"; do
        sleep 1
        new="$(prop "$UNIT" MainPID)"
        if [[ -n "$new" && "$new" != 0 && "$new" != "$pid" ]]; then
            seen="$(now)"
            break
        fi
    done
    restarts="$(prop "$UNIT" NRestarts)"
    {
        echo "sigstop_at=$t0"
        echo "old_pid=$pid"
        echo "restarts_before=$before"
        echo "new_pid=$new"
        echo "new_pid_seen_at=$seen"
        echo "restarts_after=$restarts"
    } > "$EVIDENCE/watchdog.txt"
    wait_active 600 || true
    echo "ready_again_s=$WAITED" >> "$EVIDENCE/watchdog.txt"
    unit_journal "$t0" > "$EVIDENCE/watchdog.journal"
}

check_bad_config() {
    local conf="$TARGET/etc/emotion-appliance/config.toml" t0 before state="" waited
    log "check 4: a bad config (an unknown section)"
    cp -p "$conf" "$RUN/config.good"
    printf '\n# target check: a typo\n[cammera]\nfps = 15\n' >> "$conf"
    t0="$(now)"
    in_target systemctl restart --no-block "$UNIT"
    while within "$t0" 300; do
        sleep 2
        state="$(prop "$UNIT" ActiveState)"
        [[ "$state" == failed ]] && break
    done
    local failed_at
    failed_at="$(now)"
    before="$(prop "$UNIT" NRestarts)"
    # RestartSec and then some: a restart would have come by now
    waited="$(( $(prop "$UNIT" RestartUSec | tr -dc 0-9) / 1000000 + 20 ))"
    [[ "$waited" -gt 20 ]] || waited=35
    sleep "$waited"
    {
        echo "restart_at=$t0"
        echo "failed_seen_at=$failed_at"
        echo "state_at_failure=$state"
        echo "restarts_at_failure=$before"
        echo "waited_s=$waited"
        echo "active_state=$(prop "$UNIT" ActiveState)"
        echo "sub_state=$(prop "$UNIT" SubState)"
        echo "result=$(prop "$UNIT" Result)"
        echo "exec_main_status=$(prop "$UNIT" ExecMainStatus)"
        echo "restarts_after=$(prop "$UNIT" NRestarts)"
    } > "$EVIDENCE/badconfig.txt"
    unit_journal "$t0" > "$EVIDENCE/badconfig.journal"
    cat "$RUN/config.good" > "$conf"
    in_target systemctl reset-failed "$UNIT" || true
    in_target systemctl start --no-block "$UNIT"
    wait_active 600 || true
    echo "ready_again_s=$WAITED" >> "$EVIDENCE/badconfig.txt"
}

check_stop() {
    local t0 rc=0
    log "check 5: systemctl stop"
    t0="$(now)"
    in_target systemctl stop "$UNIT" || rc=$?
    {
        echo "stop_rc=$rc"
        echo "stop_s=$(since "$t0")"
        echo "timeout_stop_usec=$(prop "$UNIT" TimeoutStopUSec)"
        echo "active_state=$(prop "$UNIT" ActiveState)"
        echo "result=$(prop "$UNIT" Result)"
        echo "exec_main_code=$(prop "$UNIT" ExecMainCode)"
        echo "exec_main_status=$(prop "$UNIT" ExecMainStatus)"
    } > "$EVIDENCE/stop.txt"
    unit_journal "$t0" > "$EVIDENCE/stop.journal"
    rc=0
    in_target runuser -u pi -- /usr/local/bin/emotion-appliance status \
        > "$EVIDENCE/status-stopped.txt" 2>&1 || rc=$?
    echo "$rc" > "$EVIDENCE/status-stopped.rc"
}

check_second_boot() {
    local ev="$EVIDENCE/boot2"
    in_target systemctl show emotion-appliance-firstboot.service \
        > "$ev/firstboot.show" 2>&1 || true
    manifest > "$ev/manifest.txt"
    wait_active 600 || true
    echo "ready_wait_s=$WAITED" > "$ev/service.txt"
}

# What the booted root gets beyond the installed stage, for emulation's sake only (listed
# in the report from $EVIDENCE/harness.txt).
harness_additions() {
    local notes="$1"
    : > "$notes"
    install -d "$TARGET/etc/systemd/system/$UNIT.d"
    # systemd-nspawn gives the container a boot id of its own over
    # /proc/sys/kernel/random/boot_id, which the unit's new /proc (ProtectKernelTunables
    # mounts one) hides: the daemon would record the kernel's, `status` outside it would
    # read the container's and say "daemon died". The container's is copied at boot and
    # bound in as well.
    install -m 644 "$HELPERS/target-check-boot-id.service" "$TARGET/etc/systemd/system/"
    {
        printf '[Unit]\nRequires=target-check-boot-id.service\n'
        printf 'After=target-check-boot-id.service\n\n[Service]\n'
        echo "BindReadOnlyPaths=/run/target-check-boot-id:/proc/sys/kernel/random/boot_id"
    } > "$TARGET/etc/systemd/system/$UNIT.d/target-check.conf"
    echo "the container's boot id (systemd-nspawn's) bound into $UNIT's new /proc too" \
        "(tools/target/target-check-boot-id.service): status.json's boot_id is compared" \
        "with the reader's" >> "$notes"
    emulated || return 0
    # every service emulates a Pi 4's core too (systemd gives them its own environment)
    install -d "$TARGET/etc/systemd/system.conf.d"
    printf '[Manager]\nDefaultEnvironment=QEMU_CPU=%s\n' "$QEMU_CPU" \
        > "$TARGET/etc/systemd/system.conf.d/target-check-qemu-cpu.conf"
    echo "QEMU_CPU=$QEMU_CPU for every service (system.conf.d DefaultEnvironment)" \
        >> "$notes"
    # qemu-user (7.2) shows programs the host's /proc/cpuinfo, and the TFLite runtime's
    # CPU detection (XNNPACK's cpuinfo) crashes on an x86 one: a Pi 4's goes over it.
    # boot() binds it over the container's /proc/cpuinfo; the drop-in over the unit's.
    install -d "$TARGET/etc/target-check"
    bash "$HELPERS/cpuinfo.sh" > "$TARGET/etc/target-check/cpuinfo"
    echo "BindReadOnlyPaths=/etc/target-check/cpuinfo:/proc/cpuinfo" \
        >> "$TARGET/etc/systemd/system/$UNIT.d/target-check.conf"
    echo "a Raspberry Pi 4's /proc/cpuinfo (tools/target/cpuinfo.sh) over the host's x86" \
        "one that qemu-user shows (the TFLite runtime's CPU detection crashes on it):" \
        "systemd-nspawn --bind-ro, and the same drop-in for $UNIT" >> "$notes"
}

# The booted system: an overlay on the leg's installed stage, fresh for every run.
mount_target() {
    unmount_under "$RUN"
    rm -rf --one-file-system "$RUN"
    mkdir -p "$RUN"
    mount_overlay "$TARGET" "$RUN/upper" "$RUN/work" "$INSTALLED_DIR/upper:$BASE_DIR"
}

# The base and the installed stage of the current leg, built when out of date.
prepare_leg() {
    local prefix=""
    [[ "$LEG" == arm64 ]] || prefix="native-"
    if base_current; then
        TIMES+=("${prefix}base=cached")
    else
        step "${prefix}base" build_base
    fi
    if installed_current; then
        TIMES+=("${prefix}install=cached")
    else
        if [[ ! -d "$CACHE/work/pi-gen/stage-emotion-appliance/00-install/files/payload" \
            || "$(cat "$CACHE/payload.key" 2> /dev/null)" != "$(source_key)" ]]; then
            step payload build_payload
            source_key > "$CACHE/payload.key"
        fi
        step "${prefix}install" install_stage
    fi
}

# --- the native leg: the sandbox's denials -------------------------------------------

# The kernel log from line $1 on: the seccomp records of processes of uid $2, as
# "count syscall-number comm" lines.
seccomp_records() {
    dmesg 2> /dev/null | tail -n "+$(( $1 + 1 ))" | grep 'type=1326' \
        | grep -E " uid=$2 " | sed -nE 's/.* comm="([^"]*)".* syscall=([0-9]+).*/\2 \1/p' \
        | sort | uniq -c | sort -rn
}

# The same stage booted natively: SystemCallFilter bites here. The service runs under
# its own filter (status as pi, a probe that a denied call fails), then once with the
# filter swapped for SystemCallLog=~@system-service (every call outside the set is
# allowed and logged by the kernel: what the filter would have denied), through a start,
# a minute of waiting for the camera and a stop.
native_leg() {
    local ev="$EVIDENCE/native" uid lines pid
    mkdir -p "$ev"
    mount_target
    harness_additions "$ev/harness.txt"
    boot native || { log "native: the system did not come up"; poweroff native; return 1; }
    wait_active 300 || true
    echo "ready_wait_s=$WAITED" > "$ev/service.txt"
    in_target systemctl show --all "$UNIT" > "$ev/service.show" 2>&1 || true
    pid="$(prop "$UNIT" MainPID)"
    [[ "$pid" =~ ^[0-9]+$ ]] && in_target cat "/proc/$pid/status" > "$ev/proc-status.txt"
    seccomp_probe "$ev"
    status_as_pi "$ev"
    # does the kernel log seccomp's LOG action here? (a call outside the set, umount2)
    lines="$(dmesg 2> /dev/null | wc -l)"
    in_target systemd-run --quiet --wait --pipe -p User=pi \
        -p SystemCallLog=~@system-service /bin/umount /target-check-nothing > /dev/null 2>&1 \
        || true
    uid="$(in_target id -u pi)"
    seccomp_records "$lines" "$uid" > "$ev/seccomp-log-probe.txt"
    # the daemon with its filter swapped for a log of what it would deny
    log "native: the daemon with SystemCallLog=~@system-service instead of its filter"
    uid="$(in_target id -u emotion-appliance)"
    printf '[Service]\nSystemCallFilter=\nSystemCallLog=~@system-service\n' \
        > "$TARGET/etc/systemd/system/$UNIT.d/target-check-log.conf"
    in_target systemctl daemon-reload
    lines="$(dmesg 2> /dev/null | wc -l)"
    in_target systemctl restart "$UNIT" || true
    wait_active 300 || true
    sleep 60
    in_target systemctl stop "$UNIT" || true
    seccomp_records "$lines" "$uid" > "$ev/seccomp-log.txt"
    local name
    while read -r _ nr _; do
        name="$(in_target scmp_sys_resolver -a "$(uname -m)" "$nr" 2> /dev/null || true)"
        printf '%s %s\n' "$nr" "${name:-?}"
    done < "$ev/seccomp-log.txt" | sort -u > "$ev/syscall-names.txt"
    rm -f "$TARGET/etc/systemd/system/$UNIT.d/target-check-log.conf"
    in_target systemctl daemon-reload
    poweroff native
}

# --- main ---------------------------------------------------------------------------

# A build step: called plainly, so that `set -e` holds inside it (never in an `if` or
# after `||`, where bash ignores -e in the whole function); a failure ends the run
# through on_exit, which names the step and shows its log.
TIMES=()
STEP=""
step() {
    local start=$SECONDS
    STEP="$1"
    shift
    "$@"
    TIMES+=("$STEP=$((SECONDS - start))")
    STEP=""
}

# What a download that failed mid-way leaves at the end of a build step's log (apt,
# debootstrap, pip): the network failed there, not the appliance.
NETWORK_ERRORS='Temporary failure (in name resolution|resolving)|Could not resolve|Failed to'
NETWORK_ERRORS+=' fetch|Connection (timed out|refused|reset)|Network is unreachable|Read timed'
NETWORK_ERRORS+=' out|ReadTimeoutError|NewConnectionError|Max retries exceeded|Hash Sum mismatch'

# Whether build step $1 (base, install, or the native leg's) failed for the network's
# sake: such an error among the last lines of its log.
network_failure() {
    [[ "$1" =~ ^(native-)?(base|install)$ ]] || return 1
    tail -n 40 "$LOGS/$1.log" 2> /dev/null | grep -Eq "$NETWORK_ERRORS"
}

on_exit() {
    local rc=$?
    stop_container
    unmount_under "$CACHE"
    if (( rc != 0 )) && [[ -n "$STEP" ]] && network_failure "$STEP"; then
        # as a machine without the network: nothing about the appliance was learnt
        echo "target check: SKIPPED: the network failed during the $STEP step; the end of" \
            "$LOGS/$STEP.log:"
        tail -n 5 "$LOGS/$STEP.log" 2> /dev/null || true
        exit 0
    fi
    if (( rc != 0 )) && [[ -n "$STEP" ]]; then
        echo "target check: FAIL: the $STEP step failed (exit $rc); the end of" \
            "$LOGS/$STEP.log:" >&2
        tail -n 25 "$LOGS/$STEP.log" >&2 2> /dev/null || true
    fi
    return "$rc"
}

# Minutes a whole run takes on two busy cores (BENCHMARKS.md "Target check under
# emulation"): with the cached root, and building it.
WARM_MIN=20
COLD_MIN=30

# Why a run does not fit in $1 minutes ("" when it does, or without a budget).
budget_reason() {
    local budget="$1" need="$WARM_MIN"
    [[ -n "$budget" ]] || return 0
    base_current || need="$COLD_MIN"
    if (( budget < need )); then
        echo "not enough time: a run takes about $need min here (the arm64 root" \
            "$( (( need == COLD_MIN )) && echo "is built first" || echo "is cached")), the" \
            "budget leaves $budget min"
    fi
}

main() {
    local rebuild=0 budget=""
    while (( $# )); do
        case "$1" in
            --rebuild) rebuild=1 ;;
            --budget-min)
                [[ "${2:-}" =~ ^-?[0-9]+$ ]] || { echo "--budget-min needs minutes" >&2; return 2; }
                budget="$2"
                shift ;;
            -h | --help)
                sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
                return 0 ;;
            *) echo "usage: $0 [--rebuild] [--budget-min MINUTES]" >&2; return 2 ;;
        esac
        shift
    done
    [[ "$TARGET_EUID" == 0 ]] && setup_host
    local reason
    reason="$(skip_reason)"
    [[ -z "$reason" ]] || skip "$reason"
    reason="$(budget_reason "$budget")"
    [[ -z "$reason" ]] || skip "$reason"
    LOGS="$CACHE/logs"
    mkdir -p "$CACHE" "$LOGS"
    exec 9> "$CACHE/lock"
    flock -n 9 || skip "another target check is running (lock $CACHE/lock)"
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    unmount_under "$CACHE"
    if (( rebuild )); then
        rm -rf --one-file-system "$CACHE"/base* "$CACHE"/installed* "$CACHE"/native-* "$CACHE/payload.key"
    fi
    rm -f "$CACHE/not-exercised-packages"
    # piwheels is not reachable from CI: plain PyPI unless the caller says otherwise
    export PIP_ARGS="${PIP_ARGS-}"

    use_leg arm64
    local need_network=0
    base_current && installed_current || need_network=1
    if [[ "$(uname -m)" != aarch64 && "${TARGET_NATIVE:-1}" != 0 ]]; then
        use_leg native
        base_current && installed_current || need_network=1
        use_leg arm64
    fi
    if (( need_network )) && ! online; then
        skip "no network (Debian's archive and PyPI) to build the roots or install the" \
            "stage, and no up-to-date cache in $CACHE"
    fi
    rm -f "$CACHE/not-exercised-packages"
    prepare_leg
    # can this machine run a container at all? (an environment, not the appliance)
    if ! "${NICE[@]}" systemd-nspawn --quiet --register=no --keep-unit --private-network \
        --read-only -D "$BASE_DIR" /bin/true > "$LOGS/nspawn-probe.log" 2>&1; then
        skip "systemd-nspawn cannot start a container here: $(tail -n 1 \
            "$LOGS/nspawn-probe.log")"
    fi
    # the package lists' Pi-only entries, for the report
    local list
    for list in $(stage_lists); do debian_packages "$list" > /dev/null; done

    rm -rf --one-file-system "$EVIDENCE"
    mount_target
    mkdir -p "$EVIDENCE"
    install -m 644 "$HELPERS/emotion-appliance.txt" \
        "$TARGET/boot/firmware/emotion-appliance.txt"
    harness_additions "$EVIDENCE/harness.txt"
    cp "$HELPERS/emotion-appliance.txt" "$EVIDENCE/settings.txt"
    sort -u "$CACHE/not-exercised-packages" > "$EVIDENCE/not-exercised-packages" \
        2> /dev/null || true

    # From here a step that goes wrong is a FAIL of its check, judged from the evidence
    # (missing evidence fails): the steps collect what they can and go on.
    local start=$SECONDS
    if boot boot1; then
        TIMES+=("boot1=$((SECONDS - start))")
        start=$SECONDS
        check_run_boot1 || true
        TIMES+=("checks=$((SECONDS - start))")
    else
        log "boot1: the system did not come up (see $LOGS/boot1-console.log)"
    fi
    start=$SECONDS
    poweroff boot1 || true
    TIMES+=("poweroff1=$((SECONDS - start))")
    start=$SECONDS
    if boot boot2; then
        check_second_boot || true
    else
        log "boot2: the system did not come up (see $LOGS/boot2-console.log)"
    fi
    poweroff boot2 || true
    TIMES+=("boot2=$((SECONDS - start))")
    unmount_under "$RUN"

    if [[ "$(uname -m)" != aarch64 && "${TARGET_NATIVE:-1}" != 0 ]]; then
        use_leg native
        prepare_leg
        start=$SECONDS
        native_leg || true
        TIMES+=("native-boot=$((SECONDS - start))")
        unmount_under "$RUN"
    fi
    printf '%s\n' "${TIMES[@]}" > "$EVIDENCE/times.txt"
    rm -rf --one-file-system "$CACHE/last"
    cp -a "$EVIDENCE" "$CACHE/last"
    cp -a "$LOGS" "$CACHE/last/logs"
    local rc=0
    python3 "$HELPERS/checks.py" "$EVIDENCE" | tee "$CACHE/last/report.txt" || rc=$?
    echo "target check: evidence and logs in ${CACHE#"$ROOT"/}/last/"
    return "$rc"
}

check_run_boot1() {
    check_firstboot_and_service
    check_watchdog
    check_bad_config
    check_stop
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # sourced by the tests: functions only
    main "$@"
fi
