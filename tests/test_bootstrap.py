"""tools/bootstrap.sh in a scratch copy of the checkout, with a stand-in venv python whose
pip only logs (and fails when told to, like pip without network): re-running the
README's commands on an installed .venv must not need the package index."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
