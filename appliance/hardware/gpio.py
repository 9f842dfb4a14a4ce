"""Like/skip buttons and status LEDs through gpiozero.

gpiozero picks the pin library at run time; tests pass its MockFactory. Without GPIO
hardware (a laptop, a container) the buttons are disabled with one log line: the
appliance runs on, it just cannot be told likes and skips by button.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from appliance.config.schema import GpioConfig, parse_rgb_pins

log = logging.getLogger(__name__)

# in the reason (and so in status' "buttons"), which doctor reads from a running daemon
CLAIM_FAILED = "could not be claimed"

MOOD_COLOURS: dict[str, tuple[float, float, float]] = {
    "happy": (1.0, 0.6, 0.0),  # warm yellow
    "energetic": (1.0, 0.0, 0.2),  # red
    "calm": (0.0, 0.8, 0.4),  # green
    "sad": (0.0, 0.2, 1.0),  # blue
}


class FeedbackPanel:
    """Two buttons (like, skip) and optional sync LED and mood RGB LED."""

    def __init__(
        self,
        settings: GpioConfig,
        on_like: Callable[[], Any],
        on_skip: Callable[[], Any],
        *,
        pin_factory: Any = None,
    ) -> None:
        self.available = False
        self.reason = "disabled in config"
        self.failed_key: str | None = None  # set when a configured pin could not be claimed
        self._devices: list[Any] = []
        self._led = self._rgb = None
        self._sync_state: str | None = None
        rgb_pins = parse_rgb_pins(settings.rgb_pins)
        if not settings.enabled:
            return
        try:
            from gpiozero import LED, RGBLED, Button
            from gpiozero.exc import BadPinFactory
        except ImportError:
            self.reason = "gpiozero not installed"
            log.info("GPIO buttons disabled: %s", self.reason)
            return
        key = "gpio"  # the config key whose pin is being claimed, for the log line
        try:
            with warnings.catch_warnings():  # one log line, not a PinFactoryFallback per try
                warnings.simplefilter("ignore")
                options = {"pull_up": True, "bounce_time": settings.bounce_s or None}
                for name, pin, action in (
                    ("like_pin", settings.like_pin, on_like),
                    ("skip_pin", settings.skip_pin, on_skip),
                ):
                    if pin:
                        key = f"gpio.{name}"
                        button = Button(pin, hold_repeat=False, pin_factory=pin_factory, **options)
                        button.when_pressed = _quietly(action)
                        self._devices.append(button)
                if settings.led_pin:
                    key = "gpio.led_pin"
                    self._led = LED(settings.led_pin, pin_factory=pin_factory)
                    self._devices.append(self._led)
                if rgb_pins:
                    key = "gpio.rgb_pins"
                    self._rgb = RGBLED(*rgb_pins, pin_factory=pin_factory)
                    self._devices.append(self._rgb)
        except BadPinFactory as exc:  # a laptop or container: expected, not a fault
            self._give_up(f"no GPIO here ({exc.__class__.__name__}: {exc})", logging.INFO)
            return
        except Exception as exc:
            # Any pin library error: lgpio raises its own lgpio.error (a bare Exception)
            # for a busy pin, unwrapped by gpiozero. Escaping here would crash the daemon
            # into a systemd restart loop; the appliance must run on without buttons.
            self.failed_key = key
            self._give_up(
                f"{key} = {_value_of(key, settings)} {CLAIM_FAILED} "
                f"({exc.__class__.__name__}: {exc}); running without buttons",
                logging.WARNING,
            )
            return
        self.available, self.reason = True, ""
        like, skip = settings.like_pin or "-", settings.skip_pin or "-"
        log.info("GPIO: like on BCM %s, skip on BCM %s", like, skip)

    def _give_up(self, reason: str, level: int) -> None:
        """Release whatever was claimed and run on without buttons and LEDs."""
        self.close()
        self._led = self._rgb = None
        self.available, self.reason = False, reason
        log.log(level, "GPIO buttons disabled: %s", reason)

    def show_sync(self, state: str) -> None:
        """online: steady; local only or starting: off; anything else (offline, login
        needed, an account error such as Premium required) blinks: a state this panel
        does not know yet is a problem to look at, not something to hide."""
        if self._led is None or state == self._sync_state:
            return
        self._sync_state = state
        if state == "online":
            self._led.on()
        elif state in ("local only", "starting"):
            self._led.off()
        else:
            self._led.blink(on_time=0.2, off_time=1.0)

    def show_mood(self, mood: str | None) -> None:
        if self._rgb is not None:
            self._rgb.color = MOOD_COLOURS.get((mood or "").split("-")[0], (0.0, 0.0, 0.0))

    def close(self) -> None:
        for device in self._devices:
            try:
                device.close()
            except Exception:  # closing must never raise on shutdown
                log.debug("closing %s failed", device, exc_info=True)
        self._devices.clear()


def _value_of(key: str, settings: GpioConfig) -> str:
    """The configured value of `key`, so the log line says which pin to free or change."""
    return repr(getattr(settings, key.removeprefix("gpio."), "?"))


def _quietly(action: Callable[[], Any]) -> Callable[[], None]:
    """gpiozero runs callbacks on its own thread: an exception there would vanish."""

    def run() -> None:
        try:
            action()
        except Exception:
            log.exception("button action failed")

    return run
