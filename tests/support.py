"""Shared test helpers: where the data and models are, and clip building."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_FACES = ROOT / "tests" / "fixtures" / "faces"
SHARED_DATA = ROOT.parent / "shared" / "data"
FER_VAL = SHARED_DATA / "fer2013" / "val"
MODELS = ROOT / "models"
MODEL_FILES = ("blazeface_short_range.tflite", "fer_emotion_quantized.tflite")

requires_models = pytest.mark.skipif(
    not all((MODELS / f).is_file() for f in MODEL_FILES),
    reason="model files absent: run tools/fetch_models.py (needs network to PyPI)",
)
requires_fer_val = pytest.mark.skipif(
    not FER_VAL.is_dir(), reason=f"shared FER2013 val set absent at {FER_VAL}"
)
TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


def requires_tensorflow(test):
    """A test that runs TensorFlow. It is marked `training`: tools/test.sh leaves it out of
    the main stage (whose .venv has no TensorFlow, and which must not import it) and runs
    it in .venv-train. Where TensorFlow is not installed it skips, saying so."""
    skip = pytest.mark.skipif(
        not TENSORFLOW,
        reason="TensorFlow not installed in this venv: tools/test.sh runs the training "
        "tests in .venv-train (pip install -e .[dev,train])",
    )
    return pytest.mark.training(skip(test))


def load_tool(name: str):
    """Import a script from tools/ as a module (once: tools import each other, and
    multiprocessing pickles their functions by module name)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def face_found(box, truth) -> bool:
    """Did a detection find the pasted face?

    FER crops are cut tight (chin or forehead missing) or loose (hair, shoulders), so the
    detector's face box legitimately differs from the pasted square; IoU against the
    square would score correct detections as misses. A hit is a box centred inside the
    pasted face, of a size within 0.4-2.5x its side.
    """
    x, y, w, h = box
    tx, ty, side, _ = truth
    cx, cy = x + w / 2, y + h / 2
    ratio = max(w, h) / side
    return tx <= cx <= tx + side and ty <= cy <= ty + side and 0.4 <= ratio <= 2.5


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m appliance ARGS` from the repository root, output captured, never raising
    on its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def cli_settings(tmp_path: Path, *pairs: str) -> list[str]:
    """Arguments that keep a CLI run inside tmp_path: an empty config (never the
    machine's /etc one), state and runtime dirs, and extra `section.key=value` pairs."""
    config = tmp_path / "config.toml"
    config.write_text("")
    pairs = (
        f"storage.state_dir={tmp_path / 'state'}",
        f"service.runtime_dir={tmp_path / 'run'}",
        *pairs,
    )
    return ["--config", str(config), *[arg for kv in pairs for arg in ("--set", kv)]]


def assert_unit_verifies(directory: Path, name: str, text: str) -> None:
    """`systemd-analyze verify` on a unit file written to `directory`: exit 0 and no
    complaint naming the unit (other "Failed to ..." lines are about the host)."""
    unit = directory / name
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    problems = [
        line for line in result.stderr.splitlines() if name in line and "Failed to" not in line
    ]
    assert result.returncode == 0 and not problems, result.stderr


def assert_a_crash_in_scoring_leaves_out_untouched(trainer, monkeypatch, out: Path, stem, argv):
    """A trainer (tools/train_*.py) whose scoring of the exported files crashes leaves the
    model and card already in `out` as they were, and adds nothing beside them."""
    out.mkdir()
    (out / f"{stem}.tflite").write_bytes(b"old model")
    (out / f"{stem}.json").write_text("old card")

    def crash(*args):
        raise RuntimeError("scoring crashed")

    monkeypatch.setattr(trainer, "measure_without_tensorflow", crash)
    with pytest.raises(RuntimeError, match="scoring crashed"):
        trainer.main(argv)
    assert (out / f"{stem}.tflite").read_bytes() == b"old model"
    assert (out / f"{stem}.json").read_text() == "old card"
    assert len(list(out.iterdir())) == 2
