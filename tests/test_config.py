"""Configuration loading: defaults, overrides, and one clear line per problem."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path

import pytest

from appliance.config import (
    DEFAULT_CONFIG_PATH,
    EXAMPLE_CONFIG_PATH,
    Config,
    ConfigError,
    config_to_toml,
    describe_config,
    load_config,
)
from appliance.config.schema import section_keys

SECTIONS = (
    "camera, detection, emotion, gpio, logging, models, mqtt, music, service, smoothing, "
    "spotify, storage, vlm"
)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    """Problems for a config file written in tmp_path, referred to by a relative label."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    label = str(path)
    # make expected lines short and readable: the file is always called config.toml
    return [p.replace(label, "config.toml") for p in info.value.problems]


def set_problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides, default_path="/nonexistent/config.toml")
    return info.value.problems


# --------------------------------------------------------------------------- defaults


def test_missing_default_file_means_builtin_defaults(tmp_path: Path) -> None:
    config = load_config(default_path=tmp_path / "absent.toml")
    assert config == Config()
    assert config.camera.source == "auto"
    assert config.camera.fps == 15
    assert config.models.threads == "auto"
    assert config.detection.haar_fallback is True
    assert config.smoothing.tau_s == 0.5
    assert config.logging.level == "INFO"


def test_default_path_constant() -> None:
    assert DEFAULT_CONFIG_PATH == "/etc/emotion-appliance/config.toml"


def test_default_file_is_read_when_present(tmp_path: Path) -> None:
    path = write(tmp_path, "[camera]\nfps = 30\n")
    assert load_config(default_path=path).camera.fps == 30


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


def test_unreadable_default_file_is_an_error(tmp_path: Path) -> None:
    # a directory where the default file should be: present but unreadable
    with pytest.raises(ConfigError) as info:
        load_config(default_path=tmp_path)
    [line] = info.value.problems
    assert line.startswith(f"{tmp_path}: cannot read: ")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_file_values_are_used_and_converted(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            '[camera]\nsource = "/dev/video2"\nwidth = 1280\n'
            "[smoothing]\ntau_s = 2\n"  # an integer is fine where a float is expected
            "[detection]\nhaar_fallback = false\n",
        )
    )
    assert config.camera.source == "/dev/video2"
    assert config.camera.width == 1280
    assert config.camera.height == 480  # untouched keys keep their defaults
    assert config.smoothing.tau_s == 2.0
    assert isinstance(config.smoothing.tau_s, float)
    assert config.detection.haar_fallback is False


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().camera.fps = 30  # type: ignore[misc]


# --------------------------------------------------------------------------- file errors


def test_unknown_section(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[camra]\nfps = 30\n") == [
        f"config.toml: [camra]: unknown section (known: {SECTIONS})"
    ]


def test_unknown_key(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[camera]\nfsp = 30\n") == [
        "config.toml: [camera] fsp: unknown key (known: fps, height, source, width)"
    ]


def test_nested_table_inside_a_section_is_an_unknown_key(tmp_path: Path) -> None:
    [line] = problems_of(tmp_path, "[camera.extra]\nx = 1\n")
    assert line.startswith("config.toml: [camera] extra: unknown key (known: ")


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "camera = 5\n") == [
        "config.toml: [camera]: expected a table, got 5"
    ]
    assert problems_of(tmp_path, "[[camera]]\nfps = 5\n") == [
        "config.toml: [camera]: expected a table, got an array"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # int: rejects strings, floats and booleans
        ('[camera]\nfps = "two"', '[camera] fps: expected an integer in 1..120, got "two"'),
        ("[camera]\nfps = 2.0", "[camera] fps: expected an integer in 1..120, got 2.0"),
        ("[camera]\nfps = true", "[camera] fps: expected an integer in 1..120, got true"),
        # float: rejects strings and booleans
        (
            '[detection]\nmin_score = "high"',
            '[detection] min_score: expected a number in 0..1, got "high"',
        ),
        (
            "[detection]\nmin_score = false",
            "[detection] min_score: expected a number in 0..1, got false",
        ),
        # bool: only true/false
        (
            "[detection]\nhaar_fallback = 1",
            "[detection] haar_fallback: expected true or false, got 1",
        ),
        (
            '[detection]\nhaar_fallback = "yes"',
            '[detection] haar_fallback: expected true or false, got "yes"',
        ),
        # str: rejects non-strings
        ("[camera]\nsource = 0", "[camera] source: expected a string, got 0"),
        ("[camera]\nsource = [1, 2]", "[camera] source: expected a string, got an array"),
        ("[camera]\nsource = {a = 1}", "[camera] source: expected a string, got a table"),
        (
            "[storage]\nstate_dir = 2024-01-02",
            "[storage] state_dir: expected a string, got a date/time (2024-01-02)",
        ),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    assert problems_of(tmp_path, text + "\n") == [f"config.toml: {expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[camera]\nfps = 500", "[camera] fps: expected an integer in 1..120, got 500"),
        ("[camera]\nfps = 0", "[camera] fps: expected an integer in 1..120, got 0"),
        ("[camera]\nwidth = -1", "[camera] width: expected an integer in 160..4096, got -1"),
        (
            "[smoothing]\ntau_s = 0.001",
            "[smoothing] tau_s: expected a number in 0.01..30, got 0.001",
        ),
        ("[smoothing]\ntau_s = 31", "[smoothing] tau_s: expected a number in 0.01..30, got 31.0"),
        (
            "[detection]\nmin_score = 1.5",
            "[detection] min_score: expected a number in 0..1, got 1.5",
        ),
        ("[detection]\nmargin = nan", "[detection] margin: expected a number in 0..1, got nan"),
        (
            "[service]\nstatus_interval_s = inf",
            "[service] status_interval_s: expected a number in 0.1..60, got inf",
        ),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, expected: str) -> None:
    assert problems_of(tmp_path, text + "\n") == [f"config.toml: {expected}"]


def test_range_limits_are_inclusive(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "[camera]\nfps = 1\nwidth = 4096\n[detection]\nmin_score = 0\n")
    )
    assert (config.camera.fps, config.camera.width, config.detection.min_score) == (1, 4096, 0.0)


def test_bad_choice(tmp_path: Path) -> None:
    assert problems_of(tmp_path, '[logging]\nlevel = "verbose"\n') == [
        'config.toml: [logging] level: expected one of "DEBUG", "INFO", "WARNING", "ERROR", '
        'got "verbose"'
    ]


def test_toml_syntax_error(tmp_path: Path) -> None:
    [line] = problems_of(tmp_path, "[camera]\nfps = \n")
    assert line.startswith("config.toml: not valid TOML: ")
    assert "line 2" in line


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[camera]\nsource = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [line] = info.value.problems
    assert line.startswith(f"{path}: not valid TOML: not UTF-8")


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = '[camera]\nfps = 500\nfsp = 1\nwidth = "wide"\n[camra]\n[logging]\nlevel = "LOUD"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["camera.height=10", "nonsense"])
    problems = info.value.problems
    assert len(problems) == 7
    file_lines, set_lines = problems[:5], problems[5:]
    # every line names where the problem is: the file, or the --set that caused it
    assert all(line.startswith(f"{path}: [") for line in file_lines)
    assert [line.split(": ", 2)[1] for line in file_lines] == [
        "[camera] fps",
        "[camera] fsp",
        "[camera] width",
        "[camra]",
        "[logging] level",
    ]
    assert set_lines == [
        "--set camera.height=10: expected an integer in 120..4096, got 10",
        "--set nonsense: expected section.key=value",
    ]
    # the exception message is the problems, one per line, ready to print
    assert str(info.value) == "\n".join(problems)


def test_default_path_label_appears_in_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "[camera]\nfps = 500\n")
    with pytest.raises(ConfigError) as info:
        load_config(default_path=path)
    assert info.value.problems == [f"{path}: [camera] fps: expected an integer in 1..120, got 500"]


# --------------------------------------------------------------------------- overrides


def test_overrides_beat_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, '[camera]\nfps = 10\nsource = "demo"\n')
    config = load_config(path, ["camera.fps=30"])
    assert config.camera.fps == 30
    assert config.camera.source == "demo"


def test_last_override_wins() -> None:
    config = load_config(
        None, ["camera.fps=30", "camera.fps=60"], default_path="/nonexistent/config.toml"
    )
    assert config.camera.fps == 60


@pytest.mark.parametrize(
    ("override", "section", "key", "value"),
    [
        ("camera.fps=30", "camera", "fps", 30),
        ("camera.fps = 30", "camera", "fps", 30),
        ("detection.haar_fallback=false", "detection", "haar_fallback", False),
        ("detection.min_score=0.75", "detection", "min_score", 0.75),
        ("detection.min_score=1", "detection", "min_score", 1.0),
        ("camera.source=/dev/video2", "camera", "source", "/dev/video2"),
        ("camera.source=v4l2:0", "camera", "source", "v4l2:0"),
        (
            "camera.source=/media/clips/happy face.mp4",
            "camera",
            "source",
            "/media/clips/happy face.mp4",
        ),
        ('camera.source="quoted.mp4"', "camera", "source", "quoted.mp4"),
        ("camera.source=demo", "camera", "source", "demo"),
        ("models.dir=", "models", "dir", ""),
        ("models.detector=a=b", "models", "detector", "a=b"),
        # a string key takes what was typed even when it looks like another TOML type
        ("models.detector=2024-01-02", "models", "detector", "2024-01-02"),
        ("storage.state_dir=42", "storage", "state_dir", "42"),
        ("logging.level=DEBUG", "logging", "level", "DEBUG"),
    ],
)
def test_override_value_parsing(override: str, section: str, key: str, value: object) -> None:
    config = load_config(None, [override], default_path="/nonexistent/config.toml")
    got = getattr(getattr(config, section), key)
    assert got == value
    assert type(got) is type(value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("camera.fps=abc", 'expected an integer in 1..120, got "abc"'),
        ("camera.fps=500", "expected an integer in 1..120, got 500"),
        ("camera.fps=30.5", "expected an integer in 1..120, got 30.5"),
        ("camera.fps=", 'expected an integer in 1..120, got ""'),
        ("detection.haar_fallback=yes", 'expected true or false, got "yes"'),
        ("detection.min_score=-0.1", "expected a number in 0..1, got -0.1"),
        ("logging.level=info", 'expected one of "DEBUG", "INFO", "WARNING", "ERROR", got "info"'),
        ("camera.fps", "expected section.key=value"),
        ("fps=30", "expected section.key=value"),
        (".fps=30", "expected section.key=value"),
        ("camera.=30", "expected section.key=value"),
        ("=30", "expected section.key=value"),
        ("camra.fps=30", f"unknown section (known: {SECTIONS})"),
        ("camera.fsp=30", "unknown key (known: fps, height, source, width)"),
        ("camera.fps.x=30", "unknown key (known: fps, height, source, width)"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    assert set_problems(override) == [f"--set {override}: {message}"]


def test_override_cannot_smuggle_extra_keys() -> None:
    # a newline in the value must not let the value add a second TOML key
    config = load_config(
        None, ["camera.source=x.mp4\nfps = 99"], default_path="/nonexistent/config.toml"
    )
    assert config.camera.source == "x.mp4\nfps = 99"
    assert config.camera.fps == 15


def test_overrides_must_be_a_sequence_of_strings() -> None:
    with pytest.raises(TypeError):
        load_config(None, "camera.fps=30", default_path="/nonexistent/config.toml")


# --------------------------------------------------------------------------- schema, rendering


def test_example_file_is_in_sync_with_schema() -> None:
    expected = config_to_toml(Config())
    assert EXAMPLE_CONFIG_PATH.read_text(encoding="utf-8") == expected, (
        "appliance/config/example.toml is stale; regenerate it with python tools/update_docs.py"
    )


def test_example_file_loads_cleanly_to_defaults() -> None:
    assert load_config(EXAMPLE_CONFIG_PATH) == Config()


def test_rendered_toml_round_trips_non_default_values(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            'camera.source="C:\\\\clips\\\\tab\there \\"q\\"\\u007f"',
            "camera.fps=60",
            "smoothing.tau_s=0.01",
            "detection.haar_fallback=false",
            "logging.level=DEBUG",
        ],
        default_path="/nonexistent/config.toml",
    )
    assert config.camera.source == 'C:\\clips\\tab\there "q"\x7f'
    assert load_config(write(tmp_path, config_to_toml(config))) == config


def test_rendered_toml_documents_every_key() -> None:
    text = config_to_toml(Config())
    data = tomllib.loads(text)
    sections = Config.sections()
    assert list(data) == list(sections)
    lines = text.splitlines()
    for name, cls in sections.items():
        assert f"[{name}]" in lines
        assert list(data[name]) == [spec.name for spec in section_keys(cls)]
        for spec in section_keys(cls):
            i = next(i for i, line in enumerate(lines) if line.startswith(f"{spec.name} = "))
            assert lines[i - 1].startswith("# ") and "default" in lines[i - 1]
            assert lines[i - 2].startswith("# ")
    # Comments wrap at 88; a long default value (the VLM prompt) stays on its key's line.
    assert all(len(line) <= 88 for line in lines if line.startswith("#"))


def test_schema_is_well_formed() -> None:
    """Every section documents itself and every default satisfies its own constraint."""
    for name, cls in Config.sections().items():
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, name  # type: ignore[attr-defined]
        assert cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("), name
        for spec in section_keys(cls):
            assert spec.doc.strip(), f"{name}.{spec.name} has no doc"
            kind = typing.get_origin(spec.kind) or spec.kind  # tuple[str, ...] -> tuple
            assert isinstance(spec.default, kind), f"{name}.{spec.name}"


def test_describe_config_is_plain_json() -> None:
    described = describe_config(Config())
    assert described["camera"] == {"source": "auto", "width": 640, "height": 480, "fps": 15}
    assert list(described) == list(Config.sections())
    assert json.loads(json.dumps(described)) == described


def test_two_gpio_parts_on_one_pin_are_refused_naming_both_keys(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[gpio]\nled_pin = 17\n") == [
        "config.toml: [gpio] led_pin: pin 17 is already used by like_pin"
    ]
    assert problems_of(tmp_path, '[gpio]\nled_pin = 5\nrgb_pins = "6,5,13"\n') == [
        "config.toml: [gpio] rgb_pins: pin 5 is already used by led_pin"
    ]
    # pin 0 means "not fitted", and a disabled GPIO section claims no pins
    load_config(write(tmp_path, "[gpio]\nlike_pin = 0\nskip_pin = 0\n"))
    load_config(write(tmp_path, "[gpio]\nenabled = false\nled_pin = 17\n"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("picamra", "'picamra' is not a source keyword (did you mean 'picamera'? a file"),
        ("Realsens", "'Realsens' is not a source keyword (did you mean 'realsense'? a file"),
        ("webcam", "'webcam' is not a source keyword (a file or folder is written as a path"),
        ("x" * 300, "is not a source keyword"),  # too long for a file name: no OSError
    ],
)
def test_a_mistyped_source_keyword_fails_config_check(source: str, message: str) -> None:
    """`config check` is where a typo should surface, not the daemon's first start."""
    (problem,) = set_problems(f"camera.source={source}")
    assert problem.startswith("/nonexistent/config.toml: [camera] source: ")
    assert message in problem


def test_a_bare_word_source_means_the_same_in_every_directory(tmp_path, monkeypatch) -> None:
    """Under systemd the working directory is the runtime dir: a bare word that happens to
    exist where `config check` ran must not pass there and fail in the daemon."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip").write_bytes(b"")
    assert "e.g. ./clip)" in set_problems("camera.source=clip")[0]
    config = load_config(None, ["camera.source=./clip"], default_path="/nonexistent/config.toml")
    assert config.camera.source == "./clip"
    for path_like in ("clips/", "clip.mp4", "~/faces", "AUTO", "v4l2:3"):  # may yet appear
        load_config(None, [f"camera.source={path_like}"], default_path="/nonexistent/c.toml")


# --------------------------------------------------------------------------- folders, nesting


@pytest.mark.parametrize(("section", "key"), [("storage", "state_dir"), ("service", "runtime_dir")])
@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_an_empty_folder_is_refused_naming_the_file_and_key(tmp_path, section, key, value):
    """Path("") is the working directory: the database and the status file landed
    wherever the daemon (or `status`) happened to start."""
    text = f"[{section}]\n{key} = {json.dumps(value)}\n"
    [line] = problems_of(tmp_path, text)
    assert line.startswith(f"config.toml: [{section}] {key}: expected a folder path, got ")
    assert "working directory" in line
    [line] = set_problems(f"{section}.{key}={json.dumps(value)}")
    assert line.startswith(f"/nonexistent/config.toml: [{section}] {key}: expected a folder")


@pytest.mark.parametrize(
    "text",
    [
        "[camera]\nsource = " + "[" * 5000 + "]" * 5000 + "\n",
        "[camera]\nsource = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
        "x = " + "[" * 5000 + "\n",  # unterminated, too
    ],
    ids=["arrays", "inline-tables", "unterminated"],
)
def test_a_toml_nested_5000_deep_is_a_config_error_not_a_recursion_error(tmp_path, text):
    [line] = problems_of(tmp_path, text)
    assert line.startswith("config.toml: not valid TOML")
    assert "nested too deeply" in line


def test_a_deeply_nested_override_is_taken_as_text(tmp_path):
    value = "[" * 5000
    [line] = set_problems(f"camera.source={value}")
    assert line.startswith("/nonexistent/config.toml: [camera] source: ")
    config = load_config(None, [f"vlm.model={value}"], default_path="/nonexistent/config.toml")
    assert config.vlm.model == value
