#!/usr/bin/env bash
# Build the emotion-appliance SD card image (Raspberry Pi OS Lite 64-bit, Pi 3/4) with
# pi-gen, Raspberry Pi's official image builder, pinned to one release.
#
# Needs: a Debian/Ubuntu x86-64 or arm64 host, root (sudo), ~20 GB free, network, and
# pi-gen's dependencies:
#   sudo apt-get install coreutils quilt parted qemu-user-static debootstrap zerofree \
#     zip dosfstools libarchive-tools libcap2-bin grep rsync xz-utils file git curl bc \
#     gpg pigz xxd arch-test binfmt-support python3-pip
# (python3-pip: the payload step builds the wheel and fetches the face detector here)
# or Docker with USE_DOCKER=1. Takes 30-90 minutes. The image lands in
# image-build/work/pi-gen/deploy/.
#
#   image-build/build.sh                       # default: no SSH key baked in (add one
#                                              # later in emotion-appliance.txt on /boot)
#   SSH_PUBKEY="$(cat ~/.ssh/id_ed25519.pub)" image-build/build.sh
#   WPA_COUNTRY=GB image-build/build.sh        # Wi-Fi country baked in: WIFI_COUNTRY
#                                              # in emotion-appliance.txt may stay empty
# Either way SSH takes keys only: the stage installs an sshd drop-in that turns
# password login off. Without WPA_COUNTRY pi-gen leaves the Wi-Fi radio off until a
# country is set (WIFI_COUNTRY on /boot, or raspi-config).
set -euo pipefail

PIGEN_REPO="${PIGEN_REPO:-https://github.com/RPi-Distro/pi-gen.git}"
# The arm64 release matching Raspberry Pi OS Lite (bookworm) 2024-11-19.
PIGEN_REF="${PIGEN_REF:-2024-11-19-raspios-bookworm-arm64}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
WORK="${WORK:-$HERE/work}"
STAGE="$HERE/stage-emotion-appliance"
FILES="$STAGE/00-install/files"

main() {
    mkdir -p "$WORK"
    stage_payload
    fetch_pigen
    place_stage
    write_config
    cd "$WORK/pi-gen"
    touch stage2/SKIP_IMAGES  # only our stage exports an image
    if [[ "${USE_DOCKER:-0}" == 1 ]]; then
        ./build-docker.sh
    else
        sudo ./build.sh
    fi
}

# The package as a wheel, the models (verified by sha256), the unit and first-boot files.
stage_payload() {
    rm -rf "$FILES/payload"
    mkdir -p "$FILES/payload/wheels" "$FILES/payload/models"
    python3 -m pip wheel --no-deps --wheel-dir "$FILES/payload/wheels" "$ROOT"
    python3 "$ROOT/tools/fetch_models.py"
    cp "$ROOT"/models/*.tflite "$ROOT"/models/*.json "$FILES/payload/models/"
    cp "$ROOT/systemd/emotion-appliance.service" "$FILES/payload/"
    cp "$ROOT/appliance/config/example.toml" "$FILES/payload/config.toml"
    cp "$ROOT/README.md" "$FILES/payload/"
}

fetch_pigen() {
    if [[ ! -d "$WORK/pi-gen/.git" ]]; then
        git clone --branch "$PIGEN_REF" --depth 1 "$PIGEN_REPO" "$WORK/pi-gen"
    fi
    git -C "$WORK/pi-gen" fetch --depth 1 origin "refs/tags/$PIGEN_REF:refs/tags/$PIGEN_REF"
    git -C "$WORK/pi-gen" checkout --quiet "$PIGEN_REF"
}

# Inside pi-gen's tree: its Docker build copies only that tree into the container.
place_stage() {
    rm -rf "$WORK/pi-gen/stage-emotion-appliance"
    cp -a "$STAGE" "$WORK/pi-gen/stage-emotion-appliance"
}

write_config() {
    cat > "$WORK/pi-gen/config" <<CONFIG
IMG_NAME=emotion-appliance
RELEASE=bookworm
TARGET_HOSTNAME=emotion-appliance
FIRST_USER_NAME=pi
DISABLE_FIRST_BOOT_USER_RENAME=1
ENABLE_SSH=1
LOCALE_DEFAULT=en_GB.UTF-8
TIMEZONE_DEFAULT=Etc/UTC
DEPLOY_COMPRESSION=xz
STAGE_LIST="stage0 stage1 stage2 stage-emotion-appliance"
CONFIG
    # pi-gen refuses PUBKEY_ONLY_SSH=1 without a key, so only a baked-in key sets it
    if [[ -n "${SSH_PUBKEY:-}" ]]; then
        printf 'PUBKEY_SSH_FIRST_USER="%s"\nPUBKEY_ONLY_SSH=1\n' "$SSH_PUBKEY" >> "$WORK/pi-gen/config"
    fi
    # pi-gen sets the Wi-Fi country (and unblocks the radio) only when WPA_COUNTRY is
    # set at all (it tests -v), so an empty one is left out.
    if [[ -n "${WPA_COUNTRY:-}" ]]; then
        if [[ ! "$WPA_COUNTRY" =~ ^[A-Z]{2}$ ]]; then
            echo "WPA_COUNTRY must be a two-letter country code in capitals (GB, US, DE...)" >&2
            return 1
        fi
        echo "WPA_COUNTRY=$WPA_COUNTRY" >> "$WORK/pi-gen/config"
    fi
    # No password login over SSH: set a random first-user password nobody knows.
    echo "FIRST_USER_PASS=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')" >> "$WORK/pi-gen/config"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # sourced by the tests: functions only
    main "$@"
fi
