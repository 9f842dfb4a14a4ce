#!/bin/bash -e
# pi-gen host step: copy the payload into the image's root filesystem.
FILES="$(dirname "$0")/files"
install -d -m 755 "${ROOTFS_DIR}/opt/emotion-appliance"
cp -r "${FILES}/payload/." "${ROOTFS_DIR}/opt/emotion-appliance/"
install -D -m 755 "${FILES}/install-appliance.sh" "${ROOTFS_DIR}/opt/emotion-appliance/install-appliance.sh"
install -D -m 755 "${FILES}/emotion-appliance-firstboot" "${ROOTFS_DIR}/usr/local/sbin/emotion-appliance-firstboot"
install -D -m 644 "${FILES}/emotion-appliance-firstboot.service" "${ROOTFS_DIR}/etc/systemd/system/emotion-appliance-firstboot.service"
install -D -m 644 "${FILES}/emotion-appliance.txt.example" "${ROOTFS_DIR}/boot/firmware/emotion-appliance.txt.example"
