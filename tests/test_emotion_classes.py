"""`[emotion] classes`: a subset of the card's labels, renormalised everywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import FIXTURE_FACES, ROOT, requires_models

from appliance.config import ConfigError, load_config

FIVE = ["angry", "happy", "sad", "surprise", "neutral"]


def test_classes_are_read_from_toml_and_from_set(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[emotion]\nclasses = ["angry", "happy", "sad", "surprise", "neutral"]\n')
    assert load_config(path).emotion.classes == tuple(FIVE)
    assert load_config(None, ["emotion.classes=happy, sad"]).emotion.classes == ("happy", "sad")
    assert load_config(None, ["emotion.classes=[]"]).emotion.classes == ()
    with pytest.raises(ConfigError, match="twice"):
        load_config(None, ['emotion.classes=["sad", "sad"]'])
    with pytest.raises(ConfigError, match="two or more"):
        load_config(None, ['emotion.classes=["sad"]'])


@requires_models
def test_a_subset_is_renormalised_in_events_and_smoothing(tmp_path):
    from appliance.capture.base import Frame
    from appliance.pipeline import Pipeline

    config = load_config(None, [f"emotion.classes={json.dumps(FIVE)}", "models.va="])
    pipeline = Pipeline.from_config(config)
    assert pipeline.classifier.labels == tuple(FIVE)
    face = cv2.imread(str(next(FIXTURE_FACES.glob("happy/*.jpg"))))
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[180:300, 260:380] = cv2.resize(face, (120, 120))
    result = pipeline.process(Frame(frame, 0.0, 0))
    assert result.faces, "the pasted face was not found"
    event = result.to_event()
    probs = event["faces"][0]["probs"]
    assert list(probs) == FIVE and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert set(result.smoothed.probs) == set(FIVE)
    assert result.smoothed.probs and -1 <= event["faces"][0]["valence"] <= 1


@requires_models
def test_a_class_the_card_lacks_stops_the_start_with_exit_2(tmp_path):
    (tmp_path / "none.toml").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--config", str(tmp_path / "none.toml"),
         "--set", f"storage.state_dir={tmp_path / 's'}",
         "--set", f"service.runtime_dir={tmp_path / 'r'}",
         "--set", 'emotion.classes=["happy", "joy"]', "run", "--source", "demo",
         "--max-frames", "2"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "[emotion] classes: 'joy' not among the labels" in result.stderr
    assert "Traceback" not in result.stderr
