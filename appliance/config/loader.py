"""Read, validate and render the appliance configuration.

Everything is validated up front, and every problem is collected before failing, so a
user fixing a config file sees all of its mistakes in one run instead of one per run.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import textwrap
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance.common.redact import redact
from appliance.config.schema import (
    DEFAULT_CONFIG_PATH,
    NAMES,
    Config,
    KeySpec,
    section_keys,
)

EXAMPLE_CONFIG_PATH = Path(__file__).with_name("example.toml")

_SET_FORM = "expected section.key=value"


class ConfigError(Exception):
    """The configuration is unusable; `.problems` holds one line per problem found."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    default_path: str | Path = DEFAULT_CONFIG_PATH,
) -> Config:
    """Build the Config from a TOML file plus `--set section.key=value` overrides.

    `path=None` means the default path, and a missing default file means built-in
    defaults; a file named explicitly must exist. Overrides are applied after the file,
    in order, so the last one for a key wins. Raises ConfigError listing every problem.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of strings, not a string")
    sections = Config.sections()
    specs = {name: {k.name: k for k in section_keys(cls)} for name, cls in sections.items()}
    values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    problems: list[str] = []

    source = Path(default_path if path is None else path)
    label = str(default_path if path is None else path)
    data = _read_toml(source, label, problems, missing_ok=path is None)
    _apply_file(data, label, specs, values, problems)
    for raw in overrides:
        _apply_override(raw, specs, values, problems)

    if problems:
        raise ConfigError(problems)
    config = Config(**{name: cls(**values[name]) for name, cls in sections.items()})
    for name in sections:  # checks across keys, declared by the section itself
        section = getattr(config, name)
        check = getattr(section, "problems", None)
        for key, problem in check() if check else ():
            problems.append(f"{label}: [{name}] {key}: {problem}")
    if problems:
        raise ConfigError(problems)
    return config


def config_to_toml(config: Config, *, redacted: bool = False) -> str:
    """Render `config` as a complete TOML file, each key preceded by its doc and limits.

    `redacted` (what `config show` prints): every text value passes the one redaction
    rule, so a password in a URL (vlm.endpoint, an RTSP camera.source) or a credential
    query value is shown as *** and the output is safe to paste into a bug report."""
    lines = [
        "# emotion-appliance configuration (TOML).",
        "#",
        "# Every key is optional: a missing key keeps the default noted above it.",
        "# Unknown sections and keys are errors. Any key can also be set for one run",
        "# with --set section.key=value, e.g. --set camera.fps=30.",
    ]
    if redacted:
        lines += ["#", "# Passwords and credentials in URLs are shown as ***."]
    for name, cls in Config.sections().items():
        current = getattr(config, name)
        lines += ["", "", *_comment(cls.__doc__ or ""), f"[{name}]"]
        for spec in section_keys(cls):
            lines += ["", *_comment(spec.doc)]
            default = _toml_value(spec.default)
            if len(default) > 50:  # a long text (the VLM prompt): its start is enough here
                default = default[:40].rstrip() + '..." (see the key below)'
            lines.append(f"# {_capitalise(spec.expected())}; default {default}.")
            value = getattr(current, spec.name)
            if redacted and isinstance(value, str):
                value = redact(value)
            lines.append(f"{spec.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def config_to_markdown() -> str:
    """The README's configuration tables, one per section, from the schema."""
    out: list[str] = []
    for name, cls in Config.sections().items():
        doc = " ".join((cls.__doc__ or "").split())
        title, _, rest = doc.partition(": ")
        out += [f"`[{name}]` — {rest or title}", "", "| key | default | allowed | meaning |"]
        out.append("|---|---|---|---|")
        for spec in section_keys(cls):
            s = spec.setting
            if spec.kind is bool:
                allowed = "true/false"
            elif spec.kind == NAMES:
                allowed = "list of names"
            elif s.choices:
                allowed = " / ".join(s.choices)
            elif spec.kind is str:
                allowed = s.pattern_doc or "text"
            elif s.min is not None and s.max is not None:
                allowed = f"{s.min}..{s.max}"
            else:
                allowed = spec.expected()
            meaning = " ".join(spec.doc.split()).replace("|", "\\|")
            default = _toml_value(spec.default).replace("|", "\\|")
            out.append(f"| `{name}.{spec.name}` | `{default}` | {allowed} | {meaning} |")
        out.append("")
    return "\n".join(out)


def describe_config(config: Config) -> dict[str, dict[str, Any]]:
    """The configuration as plain nested dicts (lists for name lists), for json.dumps."""
    return dataclasses.asdict(
        config, dict_factory=lambda items: {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in items}
    )  # fmt: skip


# --------------------------------------------------------------------------- reading


def _read_toml(path: Path, label: str, problems: list[str], *, missing_ok: bool) -> dict:
    """Parse the file; a problem line (not an exception) for anything that goes wrong."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        if not missing_ok:
            problems.append(f"{label}: cannot read: {exc.strerror or exc}")
        return {}
    except OSError as exc:
        problems.append(f"{label}: cannot read: {exc.strerror or exc}")
        return {}
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(
            f"{label}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        )
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{label}: not valid TOML: {exc}")
    except RecursionError:  # tomllib recurses per nesting level: [[[[...]]]] 5,000 deep
        problems.append(f"{label}: not valid TOML here: arrays or tables nested too deeply")
    return {}


def _apply_file(
    data: dict[str, Any],
    label: str,
    specs: dict[str, dict[str, KeySpec]],
    values: dict[str, dict[str, Any]],
    problems: list[str],
) -> None:
    for name, table in data.items():
        keys = specs.get(name)
        if keys is None:
            problems.append(f"{label}: [{name}]: unknown section (known: {_known(specs)})")
            continue
        if not isinstance(table, dict):
            problems.append(f"{label}: [{name}]: expected a table, got {_show(table)}")
            continue
        for key, value in table.items():
            spec = keys.get(key)
            if spec is None:
                problems.append(f"{label}: [{name}] {key}: unknown key (known: {_known(keys)})")
                continue
            try:
                values[name][key] = _check(spec, value)
            except ValueError as exc:
                problems.append(f"{label}: [{name}] {key}: {exc}")


def _apply_override(
    raw: str,
    specs: dict[str, dict[str, KeySpec]],
    values: dict[str, dict[str, Any]],
    problems: list[str],
) -> None:
    label = f"--set {raw}"
    dotted, eq, text = raw.partition("=")
    name, dot, key = dotted.strip().partition(".")
    if not eq or not dot or not name or not key:
        problems.append(f"{label}: {_SET_FORM}")
        return
    keys = specs.get(name)
    if keys is None:
        problems.append(f"{label}: unknown section (known: {_known(specs)})")
        return
    spec = keys.get(key)
    if spec is None:
        problems.append(f"{label}: unknown key (known: {_known(keys)})")
        return
    try:
        values[name][key] = _check(spec, _parse_override_value(text.strip(), spec))
    except ValueError as exc:
        problems.append(f"{label}: {exc}")


def _parse_override_value(text: str, spec: KeySpec) -> Any:
    """A TOML value when `text` is one, else the bare text.

    For string keys a non-string TOML value (`--set models.detector=2024-01-01`) is also
    taken as the bare text: the user clearly meant the string they typed.
    """
    try:
        parsed = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return text
    if set(parsed) != {"v"}:  # e.g. text smuggled a newline and another key
        return text
    value = parsed["v"]
    if spec.kind is str and not isinstance(value, str):
        return text
    return value


def _check(spec: KeySpec, value: Any) -> Any:
    """Return `value` converted to the key's type, or raise ValueError('expected ...')."""
    s = spec.setting
    ok = False
    if spec.kind is bool:
        ok = isinstance(value, bool)
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif spec.kind == NAMES:
        if isinstance(value, str):  # --set emotion.classes=angry,happy
            value = [part.strip() for part in value.split(",")] if value.strip() else []
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if ok:
            value = tuple(value)
            ok = not s.choices or all(v in s.choices for v in value)
    elif spec.kind is str:
        # `threads = 2` for a key that also takes a word ("auto"): its text, if valid
        number = isinstance(value, int) and not isinstance(value, bool)
        if number and s.pattern is not None and re.fullmatch(s.pattern, str(value)):
            value = str(value)
        ok = isinstance(value, str) and (not s.choices or value in s.choices)
        ok = ok and (s.pattern is None or re.fullmatch(s.pattern, value) is not None)
    if ok and spec.kind in (int, float):
        ok = not (isinstance(value, float) and math.isnan(value))
        ok = ok and (s.min is None or value >= s.min) and (s.max is None or value <= s.max)
    if not ok:
        raise ValueError(f"expected {spec.expected()}, got {_show(value)}")
    return value


# --------------------------------------------------------------------------- rendering


def _known(names: dict[str, Any]) -> str:
    return ", ".join(sorted(names))


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _comment(text: str, width: int = 88) -> list[str]:
    """Wrap a doc string into `# ` comment lines."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n") if p.strip()]
    lines: list[str] = []
    for i, para in enumerate(paragraphs):
        if i:
            lines.append("#")
        lines += [
            f"# {line}"
            for line in textwrap.wrap(
                para, width - 2, break_on_hyphens=False, break_long_words=False
            )
        ]
    return lines


def _toml_string(text: str) -> str:
    """A TOML basic string; escapes everything TOML forbids raw."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    """Render a schema value (bool, int, float, str) as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_string(str(v)) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as a config value")


def _show(value: Any) -> str:
    """How a wrong value is quoted back to the user: as TOML, or its kind for containers."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.date | datetime.time):
        return f"a date/time ({value.isoformat()})"
    if isinstance(value, str) and len(value) > 60:
        return _toml_string(value[:57])[:-1] + '..."'
    try:
        return _toml_value(value)
    except TypeError:
        return repr(value)
