"""The suite runs in two stages (tools/test.sh): every test but the `training` ones in
.venv, which has no TensorFlow and must never import it, then the `training` tests
(support.requires_tensorflow) in .venv-train. A test that imports TensorFlow without the
mark would pass only where TensorFlow happens to be installed, so it fails here instead,
naming itself, in whichever venv it runs."""

from __future__ import annotations

import os
import sys

import pytest

MOVE_IT = "mark it with support.requires_tensorflow (the `training` stage, run in .venv-train)"
# tools/test.sh names a file here for the main stage: how many `training` tests its
# selection left out, so that the training stage collecting none of them is an error.
DESELECTED_FILE = "APPLIANCE_TRAINING_DESELECTED"
_training_deselected = 0


def pytest_deselected(items) -> None:
    global _training_deselected
    _training_deselected += sum(bool(item.get_closest_marker("training")) for item in items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if path := os.environ.get(DESELECTED_FILE):
        with open(path, "w") as out:
            out.write(f"{_training_deselected}\n")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Collecting must not import TensorFlow: the main stage would load it for nothing."""
    if "tensorflow" in sys.modules:
        raise pytest.UsageError(
            f"TensorFlow was imported while collecting the tests: import it inside the test "
            f"that needs it and {MOVE_IT}"
        )


@pytest.fixture(autouse=True)
def _only_training_tests_import_tensorflow(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("training") or "tensorflow" in sys.modules:
        yield
        return
    yield
    if "tensorflow" in sys.modules:
        pytest.fail(f"{request.node.nodeid} imported TensorFlow: {MOVE_IT}", pytrace=False)
