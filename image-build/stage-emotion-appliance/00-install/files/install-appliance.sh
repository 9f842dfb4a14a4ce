#!/bin/bash
# Install emotion-appliance inside the image (pi-gen runs it in the chroot).
#
# Everything lives under $PREFIX (default /), so the same script runs in a throwaway
# root in the tests. The payload (wheel, models, unit, config) is already in
# $PREFIX/opt/emotion-appliance, copied there by 01-run.sh.
set -euo pipefail

PREFIX="${PREFIX:-}"
APP="$PREFIX/opt/emotion-appliance"
VENV="$APP/venv"
SERVICE_USER="emotion-appliance"
# Extra pip options: piwheels by default (prebuilt ARM wheels); PIP_ARGS="" (set, empty)
# installs from plain PyPI, where piwheels cannot be reached (tools/target_check.sh).
PIP_ARGS="${PIP_ARGS---extra-index-url https://www.piwheels.org/simple}"

log() { echo "install-appliance: $*"; }

create_user() {
    if ! getent passwd "$SERVICE_USER" > /dev/null; then
        useradd --system --home-dir /var/lib/emotion-appliance --no-create-home \
            --shell /usr/sbin/nologin --user-group "$SERVICE_USER"
    fi
    for group in video gpio i2c; do
        getent group "$group" > /dev/null || groupadd --system "$group"
        usermod -a -G "$group" "$SERVICE_USER"
    done
    # The admin user may read the service's status and logs.
    if getent passwd pi > /dev/null; then
        usermod -a -G "$SERVICE_USER,systemd-journal" pi || true
    fi
}

install_venv() {
    # System site packages: apt's python3-picamera2 and python3-lgpio are visible.
    python3 -m venv --system-site-packages "$VENV"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of options
    "$VENV/bin/pip" install --no-cache-dir $PIP_ARGS "$APP"/wheels/*.whl
    install -d -m 755 "$PREFIX/usr/local/bin"
    ln -sf /opt/emotion-appliance/venv/bin/emotion-appliance "$PREFIX/usr/local/bin/emotion-appliance"
    install -d -m 755 "$PREFIX/usr/share/emotion-appliance"
    rm -rf "$PREFIX/usr/share/emotion-appliance/models"
    cp -r "$APP/models" "$PREFIX/usr/share/emotion-appliance/models"
}

install_config_and_units() {
    install -d -m 750 "$PREFIX/etc/emotion-appliance"
    if [[ ! -e "$PREFIX/etc/emotion-appliance/config.toml" ]]; then
        install -m 640 "$APP/config.toml" "$PREFIX/etc/emotion-appliance/config.toml"
    fi
    chgrp -R "$SERVICE_USER" "$PREFIX/etc/emotion-appliance"
    install -D -m 644 "$APP/emotion-appliance.service" \
        "$PREFIX/etc/systemd/system/emotion-appliance.service"
    systemctl enable emotion-appliance-firstboot.service emotion-appliance.service
    systemctl enable ssh
}

harden_ssh() {
    install -d -m 755 "$PREFIX/etc/ssh/sshd_config.d"
    cat > "$PREFIX/etc/ssh/sshd_config.d/10-emotion-appliance.conf" <<'CONF'
# Key-only login: add your key in emotion-appliance.txt on the boot partition.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
CONF
}

create_user
install_venv
install_config_and_units
harden_ssh
log "installed $("$VENV/bin/python" -c 'import appliance; print(appliance.__version__)')"
