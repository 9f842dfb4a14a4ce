#!/bin/bash
# Print a Raspberry Pi 4's /proc/cpuinfo (BCM2711: Cortex-A72 r0p3, 64-bit Raspberry Pi
# OS) with one processor for each CPU of this host. qemu-user (7.2, bookworm's) shows an
# emulated program the host's x86 /proc/cpuinfo; libraries that read it to find their
# ARM cores (the cpuinfo library in XNNPACK, inside the TFLite runtime) then crash on
# entries that cannot be ARM. tools/target_check.sh mounts this over the booted root's
# /proc/cpuinfo: what a program reads there is then what it reads on a Pi 4.
set -euo pipefail
count="$(getconf _NPROCESSORS_CONF)"
for ((i = 0; i < count; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
    printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done
printf 'Revision\t: c03111\nSerial\t\t: 100000000000c0de\n'
printf 'Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
