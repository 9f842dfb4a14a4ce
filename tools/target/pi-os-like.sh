#!/bin/bash -e
# Run inside the arm64 chroot (stdin of `bash -e`, as pi-gen's on_chroot runs its
# scripts) after the packages are in: what pi-gen's stage0-2 do that our stage relies on,
# from Debian alone. Raspberry Pi OS Lite (bookworm) 2024-11-19 with
# image-build/build.sh's config: TARGET_HOSTNAME=emotion-appliance, FIRST_USER_NAME=pi
# (no password login), the hardware groups, the boot partition at /boot/firmware.
# Raspberry Pi-only pieces (kernel, firmware, raspi-config, rpi-* packages) are left out:
# tools/target/pi-only-packages lists what the check cannot exercise.
echo emotion-appliance > /etc/hostname
if grep -q '^127\.0\.1\.1' /etc/hosts; then
    sed -i 's/^127\.0\.1\.1.*/127.0.1.1\temotion-appliance/' /etc/hosts
else
    printf '127.0.1.1\temotion-appliance\n' >> /etc/hosts
fi
# stage1/01-sys-tweaks: the hardware groups and the first user in them
for group in input spi i2c gpio; do
    groupadd -f -r "$group"
done
if ! id -u pi > /dev/null 2>&1; then
    useradd --create-home --shell /bin/bash pi
fi
for group in adm dialout cdrom audio users sudo video games plugdev input gpio spi i2c \
    netdev render; do
    if getent group "$group" > /dev/null; then
        usermod -a -G "$group" pi
    fi
done
# build.sh sets a random FIRST_USER_PASS nobody knows: here the password is locked
usermod -p '*' pi
# the boot partition (FAT on the card): where emotion-appliance.txt goes
install -d -m 755 /boot/firmware
if [ ! -f /boot/firmware/cmdline.txt ]; then
    echo 'console=serial0,115200 console=tty1 root=PARTUUID=00000000-02 rootfstype=ext4' \
        'fsck.repair=yes rootwait' > /boot/firmware/cmdline.txt
fi
