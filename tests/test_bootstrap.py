"""tools/bootstrap.sh in a scratch copy of the checkout, with a stand-in venv python whose
pip only logs (and fails when told to, like pip without network): re-running the
README's commands on an installed .venv must not need the package index. And
tools/test.sh's two stages (.venv, then the training tests in .venv-train) with
stand-ins for bootstrap, ruff and pytest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT


def checkout(tmp_path: Path) -> Path:
    """The files bootstrap.sh reads, and a .venv whose python stands in for the real one.

    `-m pip` logs its arguments to pip.log and exits with $FAKE_PIP_RC; a successful pip
    marks the package installed (the file `installed`), which the import check reads."""
    root = tmp_path / "checkout"
    (root / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "bootstrap.sh", root / "tools")
    shutil.copy(ROOT / "setup.py", root)
    shutil.copy(ROOT / "pyproject.toml", root)
    (root / "tools" / "fetch_models.py").write_text("print('models ok')\n")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/bin/sh\n"
        'venv="$(dirname "$0")/.."\n'
        'if [ "$1 $2" = "-m pip" ]; then\n'
        '    echo "$*" >> "$venv/pip.log"\n'
        '    [ "${FAKE_PIP_RC:-0}" = 0 ] && case "$*" in *" -e "*) touch "$venv/installed";; esac\n'
        '    exit "${FAKE_PIP_RC:-0}"\n'
        "fi\n"
        'case "$*" in *"import sys, appliance"*) test -f "$venv/installed"; exit;; esac\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    return root


def bootstrap(root: Path, extras: str = "dev", pip_rc: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "FAKE_PIP_RC": str(pip_rc)}
    return subprocess.run(
        ["bash", str(root / "tools" / "bootstrap.sh"), extras],
        env=env, capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip


def pip_calls(root: Path) -> list[str]:
    log = root / ".venv" / "pip.log"
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def test_rerun_on_an_installed_venv_needs_no_index(tmp_path):
    root = checkout(tmp_path)
    first = bootstrap(root)
    assert first.returncode == 0, first.stderr
    assert any(f"-e {root}[dev]" in call for call in pip_calls(root))
    assert "models ok" in first.stdout
    # Offline now: pip would fail, but nothing changed, so it is not run at all.
    again = bootstrap(root, pip_rc=1)
    assert again.returncode == 0, again.stderr
    assert pip_calls(root) == []
    assert "pip skipped" in again.stdout and "models ok" in again.stdout


def test_changed_setup_or_other_extras_install_again(tmp_path):
    root = checkout(tmp_path)
    assert bootstrap(root).returncode == 0
    pip_calls(root)
    assert bootstrap(root, extras="").returncode == 0  # tools/demo.sh: no extras
    assert any(call.endswith(f"-e {root}") for call in pip_calls(root))
    with (root / "setup.py").open("a") as setup:
        setup.write("# a new dependency\n")
    assert bootstrap(root).returncode == 0
    assert any(f"-e {root}[dev]" in call for call in pip_calls(root))
    assert bootstrap(root).returncode == 0
    assert pip_calls(root) == []


def test_pip_failing_on_an_installed_venv_warns_and_goes_on(tmp_path):
    root = checkout(tmp_path)
    assert bootstrap(root).returncode == 0
    (root / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + "\n")
    offline = bootstrap(root, pip_rc=1)
    assert offline.returncode == 0, offline.stderr
    assert "warning: pip install failed" in offline.stderr
    # The stamp was not updated: the next run with network installs.
    assert bootstrap(root).returncode == 0
    assert any(f"-e {root}[dev]" in call for call in pip_calls(root))


def test_nothing_installed_and_no_index_fails_clearly(tmp_path):
    root = checkout(tmp_path)
    result = bootstrap(root, pip_rc=1)
    assert result.returncode == 1
    assert "the first run needs network" in result.stderr
    # A stamp without an importable package is not trusted either.
    assert bootstrap(root).returncode == 0
    (root / ".venv" / "installed").unlink()
    pip_calls(root)
    assert bootstrap(root).returncode == 0
    assert any(f"-e {root}[dev]" in call for call in pip_calls(root))


def test_dev_extra_pins_ruff_to_one_minor_release():
    """tools/test.sh lints with rule sets that change between ruff's minor releases: an
    unpinned ruff could fail CI with no change here."""
    pins = re.findall(r'"ruff([^";]*)', (ROOT / "setup.py").read_text())
    assert len(pins) == 1, pins
    match = re.fullmatch(r">=0\.(\d+)(?:\.\d+)?,<0\.(\d+)", pins[0])
    assert match and int(match[2]) == int(match[1]) + 1, pins[0]
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff:  # the ruff this checkout lints with lies in the pinned range
        version = subprocess.run([ruff, "--version"], capture_output=True, text=True).stdout
        minor = re.search(r"ruff 0\.(\d+)\.", version)
        assert minor and minor[1] == match[1], version


def demo_checkout(tmp_path: Path, import_rc: int) -> Path:
    """tools/demo.sh with a no-op bootstrap.sh, a song catalog beside the checkout, and a
    stand-in emotion-appliance that logs its calls and fails `catalog import` on request."""
    root = tmp_path / "checkout"
    (root / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "demo.sh", root / "tools")
    (root / "tools" / "bootstrap.sh").write_text("true\n")
    catalog = tmp_path / "shared" / "data" / "catalog" / "spotify_tracks_sample.csv"
    catalog.parent.mkdir(parents=True)
    catalog.write_text("uri,name,artist,valence,energy\n")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    app = bin_dir / "emotion-appliance"
    app.write_text(
        "#!/bin/sh\n"
        f'echo "$1 $2" >> "{root}/calls.log"\n'
        'if [ "$1 $2" = "catalog import" ]; then\n'
        f'    echo "catalog: cannot read the CSV" >&2; exit {import_rc}\n'
        "fi\n"
        'echo "700 frames"\n'
    )
    app.chmod(0o755)
    return root


def test_demo_goes_on_without_moods_when_the_catalog_import_fails(tmp_path):
    """`2>/dev/null` and set -e made a failing import end the demo silently with exit 1."""
    root = demo_checkout(tmp_path, import_rc=1)
    result = subprocess.run(
        ["bash", str(root / "tools" / "demo.sh")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "catalog: cannot read the CSV" in result.stderr  # the reason is not swallowed
    assert "moods and songs are skipped" in result.stdout + result.stderr
    assert "700 frames" in result.stdout  # the demo itself still ran
    assert "songs queued" not in result.stdout
    assert (root / "calls.log").read_text().splitlines() == ["catalog import", "run --source"]


def test_a_second_argument_installs_into_another_venv(tmp_path):
    """tools/test.sh keeps TensorFlow in .venv-train: its own stamp, .venv left alone."""
    root = checkout(tmp_path)
    shutil.copytree(root / ".venv", root / ".venv-train")
    assert bootstrap(root).returncode == 0
    pip_calls(root)
    train = subprocess.run(
        ["bash", str(root / "tools" / "bootstrap.sh"), "dev,train", ".venv-train"],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
        timeout=60, cwd=root,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    log = root / ".venv-train" / "pip.log"
    assert any(f"-e {root}[dev,train]" in call for call in log.read_text().splitlines())
    assert pip_calls(root) == []  # .venv: not touched
    assert (root / ".venv-train" / ".bootstrap-dev,train").is_file()
    again = subprocess.run(
        ["bash", str(root / "tools" / "bootstrap.sh"), "dev,train", ".venv-train"],
        env={**os.environ, "PYTHON": sys.executable, "FAKE_PIP_RC": "1"},
        capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip
    assert again.returncode == 0 and "already installed in .venv-train" in again.stdout


def suite_checkout(tmp_path: Path, train_bootstrap_rc: int = 0) -> Path:
    """tools/test.sh with stand-ins: bootstrap.sh logs its arguments (and fails for
    .venv-train when told to), ruff passes, and each venv's `python -m pytest` logs its
    arguments and exits with $FAKE_MAIN_RC (`-m training`: $FAKE_TRAINING_RC), and the
    main stage's writes $FAKE_LEFT_OUT where tests/conftest.py counts the training tests
    it left out; the target check logs its arguments (target.log) and exits with $FAKE_TARGET_RC."""
    root = tmp_path / "checkout"
    (root / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "test.sh", root / "tools")
    (root / "tools" / "bootstrap.sh").write_text(
        f'echo "$*" >> "{root}/bootstrap.log"\n'
        f'if [ "${{2:-}}" = .venv-train ]; then exit {train_bootstrap_rc}; fi\n'
    )
    for venv in (".venv", ".venv-train"):
        bin_dir = root / venv / "bin"
        bin_dir.mkdir(parents=True)
        python = bin_dir / "python"
        python.write_text(
            "#!/bin/sh\n"
            f'echo "{venv} $*" >> "{root}/pytest.log"\n'
            'if [ -n "${APPLIANCE_TRAINING_DESELECTED:-}" ]; then\n'
            '    echo "${FAKE_LEFT_OUT:-0}" > "$APPLIANCE_TRAINING_DESELECTED"\n'
            "fi\n"
            f'case "$*" in *"-m training"*) exit "${{FAKE_TRAINING_RC:-0}}";; esac\n'
            'exit "${FAKE_MAIN_RC:-0}"\n'
        )
        python.chmod(0o755)
    ruff = root / ".venv" / "bin" / "ruff"
    ruff.write_text("#!/bin/sh\nexit 0\n")
    ruff.chmod(0o755)
    (root / "tools" / "target_check.sh").write_text(
        f'echo "target $*" >> "{root}/target.log"\nexit "${{FAKE_TARGET_RC:-0}}"\n'
    )
    return root


def run_suite(root: Path, *args: str, **rcs: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TARGET_CHECK")}
    env.update({f"FAKE_{k.upper()}": str(v) for k, v in rcs.items()})
    return subprocess.run(
        ["bash", str(root / "tools" / "test.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip


def test_the_suite_runs_in_two_stages_and_tensorflow_only_in_the_second(tmp_path):
    root = suite_checkout(tmp_path)
    result = run_suite(root, "-q", "--durations=5", left_out=9)
    assert result.returncode == 0, result.stderr
    assert (root / "bootstrap.log").read_text().splitlines() == ["dev", "dev,train .venv-train"]
    assert (root / "pytest.log").read_text().splitlines() == [
        ".venv -m pytest -m not training -q --durations=5",
        ".venv-train -m pytest -m training -q --durations=5",
    ]
    assert (root / "target.log").read_text().splitlines() == ["target --budget-min 90"]
    assert result.stdout.index("main stage") < result.stdout.index("training stage")
    assert result.stdout.index("training stage") < result.stdout.index("target stage")


@pytest.mark.parametrize(
    ("setting", "target_rc", "logged", "code"),
    [
        ("0", 1, None, 0),  # TARGET_CHECK=0: never run
        ("1", 0, "target", 0),  # TARGET_CHECK=1: run whatever the time
        ("auto", 1, "target --budget-min 90", 1),  # a FAIL fails the run
    ],
)
def test_the_target_check_runs_last_when_asked_or_when_time_allows(
    tmp_path, setting, target_rc, logged, code
):
    root = suite_checkout(tmp_path)
    result = subprocess.run(
        ["env", *([f"TARGET_CHECK={setting}"] if setting != "auto" else []),
         "bash", str(root / "tools" / "test.sh")],
        env={k: v for k, v in os.environ.items() if not k.startswith("TARGET_CHECK")}
        | {"FAKE_TARGET_RC": str(target_rc), "FAKE_LEFT_OUT": "9"},
        capture_output=True, text=True, timeout=60, cwd=root,
    )  # fmt: skip
    assert result.returncode == code, result.stderr
    log = root / "target.log"
    lines = [line.strip() for line in log.read_text().splitlines()] if log.exists() else []
    assert lines == ([logged] if logged else [])


def test_a_failing_test_stage_skips_the_target_check(tmp_path):
    root = suite_checkout(tmp_path)
    result = run_suite(root, main_rc=1, left_out=9)
    assert result.returncode == 1
    assert not (root / "target.log").exists()


def test_without_a_venv_for_tensorflow_the_training_tests_skip_in_dot_venv(tmp_path):
    """No TensorFlow wheel for this machine: the training stage still runs (and reports
    its tests as skipped, with the reason), from .venv."""
    root = suite_checkout(tmp_path, train_bootstrap_rc=1)
    result = run_suite(root, left_out=9)
    assert result.returncode == 0, result.stderr
    assert "training tests will skip" in result.stderr
    assert (root / "pytest.log").read_text().splitlines()[-1] == ".venv -m pytest -m training"


@pytest.mark.parametrize(
    ("main", "training", "left_out", "code"),
    [
        (1, 0, 9, 1),  # a failure in either stage fails the run ...
        (0, 1, 9, 1),
        (0, 2, 9, 2),  # ... with its own exit code
        (2, 0, 9, 2),  # interrupted (or a collection error): the training stage waits
        (4, 0, 9, 4),  # a usage error would only repeat there
        (0, 5, 0, 0),  # the arguments select no training test: nothing to run there
        (5, 0, 9, 0),  # ... or only training tests
        (0, 5, 9, 5),  # the main stage left training tests out, and none ran: not a pass
        (5, 5, 0, 5),  # nothing ran at all
        (1, 5, 0, 1),
    ],
)
def test_no_tests_collected_in_a_stage_neither_fails_nor_fakes_the_run(
    tmp_path, main, training, left_out, code
):
    root = suite_checkout(tmp_path)
    result = run_suite(root, main_rc=main, training_rc=training, left_out=left_out)
    assert result.returncode == code, result.stderr
    stages = 2 if main in (0, 1, 5) else 1
    assert len((root / "pytest.log").read_text().splitlines()) == stages
