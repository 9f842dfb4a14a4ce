#!/usr/bin/env bash
# Set up and run every test (and the linter), in two pytest runs:
#   main stage      .venv (the dev extra, no TensorFlow): every test but the training ones
#   training stage  .venv-train (dev and train extras): the tests marked `training`, which
#                   run TensorFlow (tests/support.py: requires_tensorflow)
# Arguments go to both runs (`-m` replaces a stage's own selection). Tests needing
# ../shared/data skip without it; the training tests skip where no TensorFlow wheel exists.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tools/bootstrap.sh" dev
cd "$root"
# TensorFlow (1.8 GB) stays out of .venv: the device never imports it, and neither do
# the other tests. Once installed, pip (and the index) is not asked again.
train_python=.venv-train/bin/python
if ! bash tools/bootstrap.sh dev,train .venv-train; then
    echo "TensorFlow unavailable here (.venv-train not set up): training tests will skip" >&2
    train_python=.venv/bin/python
fi
# systemd-analyze verifies the unit file; a minimal CI image may lack it.
if ! command -v systemd-analyze >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq systemd >/dev/null 2>&1 \
        || echo "systemd-analyze unavailable: the unit verify test will skip" >&2
fi
# The MQTT tests run a real Mosquitto (and its clients) on 127.0.0.1; it lives in /usr/sbin.
if { ! command -v mosquitto_sub >/dev/null || { ! command -v mosquitto >/dev/null \
    && [ ! -x /usr/sbin/mosquitto ]; }; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null
then
    { apt-get install -y -qq mosquitto mosquitto-clients \
        || { apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients; }; } \
        >/dev/null 2>&1 || echo "mosquitto unavailable: the MQTT broker tests will skip" >&2
fi
# pyrealsense2's wheel links libusb-1.0; without it the RealSense tests skip.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so\.0' && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null
then
    { apt-get install -y -qq libusb-1.0-0 \
        || { apt-get update -qq && apt-get install -y -qq libusb-1.0-0; }; } \
        >/dev/null 2>&1 || echo "libusb-1.0-0 unavailable: the RealSense tests will skip" >&2
fi
.venv/bin/ruff check appliance tools tests

# The main stage counts the training tests its selection left out (tests/conftest.py):
# pytest's exit 5, "no tests collected", is fine for a stage only when the arguments
# select none of its tests, and never for both stages.
count="$(mktemp)"
trap 'rm -f "$count"' EXIT
echo "tools/test.sh: main stage (.venv, not training)"
main=0
APPLIANCE_TRAINING_DESELECTED="$count" .venv/bin/python -m pytest -m "not training" "$@" \
    || main=$?
case "$main" in
    0 | 1 | 5) ;;
    *)  # interrupted (Ctrl-C, a collection error), a pytest error or a usage error
        echo "tools/test.sh: main stage exit $main: training stage not run" >&2
        exit "$main" ;;
esac
echo "tools/test.sh: training stage ($train_python, training)"
training=0
"$train_python" -m pytest -m training "$@" || training=$?

left_out="$(cat "$count" 2>/dev/null || true)"
if [ "$main" = 5 ] && [ "$training" = 5 ]; then
    echo "tools/test.sh: no tests collected in either stage" >&2
    exit 5
elif [ "$training" = 5 ] && [ "${left_out:-0}" != 0 ]; then
    echo "tools/test.sh: the training stage collected nothing, but the main stage left" \
        "out $left_out training tests" >&2
    exit 5
fi
for rc in "$main" "$training"; do
    if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then
        echo "tools/test.sh: main stage exit $main, training stage exit $training" >&2
        exit "$rc"
    fi
done

# --- Optional stage: the target check ------------------------------------------------
# tools/target_check.sh boots the SD image's stage in an emulated arm64 Raspberry Pi
# OS-like system and checks it from outside (README "Flash and boot"). It needs root,
# binfmt_misc with qemu-aarch64 and the network for its first build; its times, cached
# in .cache/target/ and cold, are in BENCHMARKS.md ("Target check under emulation").
# TARGET_CHECK=1 runs it whatever the time, TARGET_CHECK=0 never; otherwise it runs when
# the machine allows it and what is left of TARGET_CHECK_BUDGET_MIN (default 90, CI's
# limit) since this script started covers it. A machine that cannot run it (not root, no
# binfmt_misc, no network or a download that broke off, too little time) prints
# "target check: SKIPPED: why" and leaves the result alone; a check that fails fails
# the run.
if [ "${TARGET_CHECK:-auto}" != 0 ]; then
    echo "tools/test.sh: target stage (tools/target_check.sh)"
    budget=()
    if [ "${TARGET_CHECK:-auto}" != 1 ]; then
        budget=(--budget-min "$(( ${TARGET_CHECK_BUDGET_MIN:-90} - SECONDS / 60 ))")
    fi
    bash tools/target_check.sh "${budget[@]}"
fi
