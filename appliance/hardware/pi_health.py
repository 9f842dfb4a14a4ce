"""CPU temperature and throttling on a Raspberry Pi, for status and monitoring.

Read from sysfs (no subprocess): the thermal zone, and the firmware's throttled flags
(the same bits `vcgencmd get_throttled` prints). On other machines the temperature may
exist and the flags not; missing files mean "unknown", never an error.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")

# Bit n: the condition now; bit n + 16: it has happened since boot.
FLAGS = ("under-voltage", "frequency capped", "throttled", "soft temperature limit")


def read_health(thermal: Path = THERMAL, throttled: Path = THROTTLED) -> dict[str, Any]:
    health: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        health["cpu_temp_c"] = round(int(thermal.read_text().strip()) / 1000.0, 1)
    try:
        bits = int(throttled.read_text().strip(), 16)
    except (OSError, ValueError):
        return health
    health["throttled_hex"] = f"0x{bits:x}"
    health["throttled_now"] = [name for bit, name in enumerate(FLAGS) if bits >> bit & 1]
    health["throttled_since_boot"] = [
        name for bit, name in enumerate(FLAGS) if bits >> (bit + 16) & 1
    ]
    return health
