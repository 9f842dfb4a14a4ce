"""A model that kills the process at load is found once, not in a restart loop.

A structurally broken .tflite whose card sha256 still matches (a bad release, a file
copied over by hand together with its card) can crash the TFLite runtime with SIGSEGV
or SIGBUS; under systemd that became a restart every 15 s, forever. So the first load of
a model file this appliance has not loaded before happens in a child process: if the
child dies by a signal the model is reported as a model error (exit 2, which the unit
does not restart), and if it loads and runs once, its sha256 is remembered in the state
dir (`models-loaded.json`), and in the user's cache for commands run by hand, and later
starts load it directly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from appliance.common.files import atomic_write
from appliance.vision.model_card import ModelCard
from appliance.vision.runtime import ModelError

log = logging.getLogger(__name__)

LOADED_FILE = "models-loaded.json"
PROBE_TIMEOUT_S = 120.0  # a Pi 3 loading a model cold from a slow SD card
MAX_REMEMBERED = 64


def user_cache() -> Path | None:
    """~/.cache/emotion-appliance (XDG_CACHE_HOME honoured); None without a home."""
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.join(os.environ["HOME"], ".cache") if os.environ.get("HOME") else ""
    )
    return Path(base) / "emotion-appliance" if base else None


def _places(state_dir: str | Path | None) -> list[Path]:
    return [Path(p) for p in (state_dir, user_cache()) if p]


def loaded_before(state_dir: str | Path | None) -> set[str]:
    """The sha256 of every model that loaded fine here before."""
    found: set[str] = set()
    for place in _places(state_dir):
        try:
            known = json.loads((place / LOADED_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(known, list):
            found |= {k for k in known if isinstance(k, str)}
    return found


def check_loads(card: ModelCard, state_dir: str | Path | None, threads: int = 1) -> None:
    """Raise ModelError unless the card's model (already checked against its sha256)
    loads and runs once without killing the process; probed in a child the first time
    this sha256 is seen, remembered when the state dir can be written."""
    known = loaded_before(state_dir)
    if card.sha256 in known:
        return
    path = card.model_path
    try:
        result = subprocess.run(
            [sys.executable, "-m", "appliance.vision.model_guard", str(path), str(threads)],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"{path}: loading it took over {PROBE_TIMEOUT_S:.0f} s in a test process; the "
            "file is probably broken although it matches its card"
        ) from None
    except OSError as exc:  # cannot start a process at all: load in-process as before
        log.warning("cannot test %s in a child process (%s); loading it directly", path, exc)
        return
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        raise ModelError(
            f"{path}: the TFLite runtime crashed ({name}) loading it, although it matches "
            f"the sha256 in {card.path.name}: the file is broken (replace the model and its "
            "card: tools/fetch_models.py for fetched models, the release's models/ folder "
            "for ours), or, when every model crashes it, the runtime cannot run on this "
            "machine"
        )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no detail"])[-1]
        raise ModelError(f"{path}: not a usable TFLite model ({reason})")
    _remember(state_dir, known | {card.sha256})


def _remember(state_dir: str | Path | None, known: set[str]) -> None:
    """In the state dir if it exists (never created here: a read-only command may be
    the caller), and in the user's cache; a place that cannot be written is skipped
    (the model is then probed again next time)."""
    text = json.dumps(sorted(known)[-MAX_REMEMBERED:])
    for place in _places(state_dir):
        try:
            if place != user_cache() and not place.is_dir():
                continue
            place.mkdir(parents=True, exist_ok=True)
            atomic_write(place / LOADED_FILE, text)
        except OSError as exc:
            log.debug("cannot remember the loaded models in %s: %s", place, exc)


def _probe(path: str, threads: int) -> int:
    """In the child: load the model and run it once on zeros."""
    import numpy as np

    from appliance.vision.runtime import TFLiteModel

    try:
        model = TFLiteModel(path, threads=threads)
        model.run(np.zeros(model.input_shape, np.float32))
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_probe(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1))
