"""`emotion-appliance` command line: run, status, config, catalog, recommend, spotify,
and the owner's queue, like and skip.

Exit codes: 0 ok; 1 runtime failure (camera, models); 2 configuration error (systemd
does not restart on it); `status` uses the Nagios codes 0-3 only, so a bad config or
bad arguments there are 3 (UNKNOWN), never 2 (CRITICAL).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn

from appliance import __version__
from appliance.common.redact import RedactingFormatter
from appliance.common.text import printable
from appliance.config import (
    DEFAULT_CONFIG_PATH,
    EXIT_CONFIG,
    Config,
    ConfigError,
    load_config,
)
from appliance.config.secrets import SecretError
from appliance.service.status import UNKNOWN, format_status, read_status, render, stale_after

if TYPE_CHECKING:
    from appliance.pipeline import FrameResult

# Heavier modules (numpy, OpenCV, TFLite, sqlite-utils) are imported by the commands
# that need them, so `--version`, `status` and `config check` stay instant on a Pi.

log = logging.getLogger("appliance")

EXIT_FAILURE = 1


class UsageError(SystemExit):
    """argparse's exit 2 for bad arguments, with the message kept for `status`."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_CONFIG)
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """--config, --set, -v on the top level and again after the subcommand. A
    subcommand's --set goes to its own list (merged in main): on the shared one it would
    replace the --set given before the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help=f"TOML config file (default {DEFAULT_CONFIG_PATH}; built-in defaults if absent)",
    )
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        dest="sub_overrides" if suppress else "overrides",
        default=default,
        help="override one setting; repeatable",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default or False, help="debug logging"
    )


def _positive_fps(text: str) -> float:
    """argparse type for --fps: float() accepts inf and nan, which broke the sampling
    step (inf divided by zero, nan raised mid-analysis)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number, e.g. 5")
    return value


def build_parser() -> argparse.ArgumentParser:
    from appliance.sources import SOURCE_SPECS_HELP

    parser = _Parser(
        prog="emotion-appliance",
        description="Recognise emotion from a camera on the device and turn mood into music.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the appliance",
        epilog=SOURCE_SPECS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(run, suppress=True)
    run.add_argument("--source", metavar="SPEC", help="camera or file (overrides camera.source)")
    run.add_argument("--loop", action="store_true", help="replay a file source forever")
    run.add_argument(
        "--realtime",
        action="store_true",
        help="play a file or folder at its own frame rate, as a live camera would",
    )
    run.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    run.add_argument("--events", metavar="PATH|-", help="write one JSON object per frame")
    run.add_argument("--quiet", action="store_true", help="do not print emotion changes")

    status = sub.add_parser("status", help="show the running daemon's state (Nagios exit codes)")
    _common(status, suppress=True)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser("check", help="validate a config file and exit")
    _common(check, suppress=True)
    check.add_argument("path", nargs="?", help="file to check (default: --config)")
    show = config_sub.add_parser("show", help="print the effective configuration as TOML")
    _common(show, suppress=True)

    catalog = sub.add_parser("catalog", help="the local song catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    imp = catalog_sub.add_parser(
        "import", help="add or update tracks from a CSV (Spotify Tracks dataset or minimal)"
    )
    _common(imp, suppress=True)
    imp.add_argument("csv", help="CSV file")
    stats = catalog_sub.add_parser("stats", help="tracks per mood")
    _common(stats, suppress=True)
    stats.add_argument("--json", action="store_true")

    rec = sub.add_parser("recommend", help="songs for a valence/arousal (read-only)")
    _common(rec, suppress=True)
    rec.add_argument("--valence", type=float, required=True, help="-1..1")
    rec.add_argument("--arousal", type=float, required=True, help="-1..1")
    rec.add_argument("--user", help="listener profile (default: music.user)")
    rec.add_argument("-n", type=int, default=5, help="how many (default 5)")
    rec.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="measure the pipeline on a video (and the fer peer)")
    _common(bench, suppress=True)
    bench.add_argument(
        "--source",
        default="demo",
        help="video file, image folder or 'demo' (decoded up front: no live cameras)",
    )
    bench.add_argument(
        "--threads",
        choices=["auto", *map(str, range(1, 9))],
        metavar="N|auto",
        help="cores for each pipeline, in every thread pool (TFLite, OpenCV, our stage "
        "overlap): N or auto (default: models.threads of the config)",
    )
    bench.add_argument("--peer", action="store_true", help="also run the fer package's pipeline")
    bench.add_argument("--json", action="store_true")

    report = sub.add_parser("report", help="draw the emotion/VA timeline from the local log")
    _common(report, suppress=True)
    report.add_argument(
        "--run",
        help="a run id (or its unique start), 'latest' or 'all' (default: the latest run; "
        "with --since/--until: every run in that range)",
    )
    report.add_argument("--since", help="start: ISO date/time (local) or unix seconds")
    report.add_argument("--until", help="end: ISO date/time (local) or unix seconds")
    report.add_argument(
        "--out",
        default="emotion-report.png",
        help="FILE.png, FILE.svg, FILE.pdf or FILE.html (by its extension)",
    )
    report.add_argument("--runs", action="store_true", help="list the stored runs and exit")

    analyze = sub.add_parser(
        "analyze", help="offline analysis of a recorded video or a study folder"
    )
    _common(analyze, suppress=True)
    analyze.add_argument(
        "video",
        help="a video file (or image folder), or a study folder DIR/<user>/<condition>/*.mp4",
    )
    analyze.add_argument(
        "--fps", type=_positive_fps, default=5.0, help="frames analysed per second (default 5)"
    )
    analyze.add_argument("--out", required=True, help="output folder")
    analyze.add_argument("--user", default="anonymous", help="participant id (one video)")
    analyze.add_argument("--condition", default="default", help="session condition (one video)")
    analyze.add_argument(
        "--labels",
        metavar="CSV",
        help="a person's annotations (session,t,label): accuracy, macro-F1, confusion",
    )
    analyze.add_argument("--no-progress", action="store_true", help="no progress bar on a terminal")

    fleet = sub.add_parser(
        "fleet", help="every appliance on an MQTT broker, one line each (read-only)"
    )
    _common(fleet, suppress=True)
    fleet.add_argument(
        "--broker", metavar="HOST[:PORT]", help="the broker (default: mqtt.host and mqtt.port)"
    )
    fleet.add_argument(
        "--wait",
        type=_positive_fps,
        default=2.0,
        metavar="S",
        help="seconds to gather the appliances' messages (default 2)",
    )
    fleet.add_argument("--json", action="store_true")

    doctor = sub.add_parser("doctor", help="check camera, models, storage, Spotify, VLM")
    _common(doctor, suppress=True)
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--no-camera", action="store_true", help="skip the camera check")

    queue = sub.add_parser("queue", help="the song queue: playing, sent, waiting; or clear it")
    _common(queue, suppress=True)
    queue.add_argument(
        "action", nargs="?", choices=("show", "clear"), default="show",
        help="show (default), or clear: withdraw the songs not sent to Spotify yet",
    )  # fmt: skip
    queue.add_argument("--json", action="store_true")
    for action, what in (("like", "like"), ("skip", "skip (Spotify goes to the next track)")):
        press = sub.add_parser(action, help=f"{what} the song playing, as the button does")
        _common(press, suppress=True)

    spotify = sub.add_parser("spotify", help="Spotify login and devices")
    spotify_sub = spotify.add_subparsers(dest="spotify_command", metavar="ACTION", required=True)
    login = spotify_sub.add_parser("login", help="log in without a browser on the device")
    _common(login, suppress=True)
    login.add_argument("--redirect-url", help="the redirected address (else asked for)")
    devices = spotify_sub.add_parser("devices", help="list Spotify Connect devices")
    _common(devices, suppress=True)
    devices.add_argument("--json", action="store_true")
    return parser


# Third-party loggers whose DEBUG lines carry secrets (spotipy logs the Basic-auth
# header, refresh tokens and Bearer tokens): never below INFO, whatever the level.
SECRET_LOGGERS = ("spotipy",)


def _setup_logging(config: Config | None, verbose: bool) -> None:
    level = "DEBUG" if verbose else (config.logging.level if config else "INFO")
    handler = logging.StreamHandler(sys.stderr)
    # the one redaction rule on every line: URL passwords, credential queries, and the
    # contents of every secret file once read
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    for name in SECRET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logging.getLevelName(level)))


class ChangePrinter:
    """Prints a line to stdout whenever the reported emotion changes, and a summary."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.last: object = ()
        self.frames = 0
        self.with_face = 0
        self.total_ms = 0.0

    def __call__(self, result: FrameResult) -> None:
        self.frames += 1
        self.with_face += bool(result.faces)
        self.total_ms += result.latency_ms["total"]
        emotion = result.smoothed.emotion
        if emotion != self.last:
            self.last = emotion
            shown = printable(emotion or "(no face)")  # labels come from the model card
            state = result.smoothed
            va = (
                f"  valence {state.valence:+.2f} arousal {state.arousal:+.2f}"
                if state.valence is not None and state.arousal is not None
                else ""
            )
            print(
                f"{result.t:8.2f}s  {shown:<10} confidence {state.confidence:.2f}{va}",
                file=self.out,
                flush=True,
            )

    def summary(self) -> str:
        if not self.frames:
            return "no frames processed"
        return (
            f"{self.frames} frames, face found in {100 * self.with_face / self.frames:.1f}%, "
            f"{self.total_ms / self.frames:.2f} ms per frame (detect+classify+VA+smooth)"
        )


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from appliance.service.daemon import Daemon  # heavy imports only for `run`

    events_file: IO[str] | None = None
    if args.events == "-":
        events_file = sys.stdout
    elif args.events:
        try:
            events_file = open(args.events, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            log.error("cannot write events to %s: %s", args.events, exc.strerror)
            return EXIT_FAILURE
    printer = None if args.quiet or args.events == "-" else ChangePrinter(sys.stdout)
    try:
        daemon = Daemon(
            config,
            source=args.source,
            loop=args.loop,
            realtime=args.realtime,
            max_frames=args.max_frames,
            events=events_file,
            on_result=printer,
        )
        code = daemon.run()
    finally:
        if events_file is not None and events_file is not sys.stdout:
            events_file.close()
    if printer is not None:
        print(printer.summary(), file=sys.stdout)
    return code


def cmd_status(args: argparse.Namespace, config: Config) -> int:
    snapshot = read_status(config.service.runtime_dir)
    stale = stale_after(config.service.status_interval_s)
    code, text = render(snapshot, stale, as_json=args.json)
    _print_verdict(text)
    return code


def _print_verdict(text: str) -> None:
    """Print and flush now, so that a reader that went away (`status | head -1`) is
    noticed here and the Nagios code survives it."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _discard_stdout()


def _discard_stdout() -> None:
    """Python's recipe for a closed pipe: point stdout at /dev/null, so that neither the
    rest of the output nor the interpreter's last flush raises again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _status_unknown(reason: str, as_json: bool) -> int:
    """`status` could not even start (bad config or arguments): UNKNOWN for monitoring,
    where exit 2 would read as CRITICAL, i.e. the appliance failing."""
    if as_json:
        _print_verdict(
            json.dumps({"code": UNKNOWN, "reason": reason, "status": None}, sort_keys=True)
        )
    else:
        _print_verdict(format_status(None, UNKNOWN, reason))
    return UNKNOWN


def cmd_catalog(args: argparse.Namespace, config: Config) -> int:
    from appliance.music.catalog import CatalogError, catalog_stats, import_catalog
    from appliance.store.database import open_database

    # only an import writes: stats must not create (or migrate) the database
    writes = args.catalog_command == "import"
    db = open_database(config.storage.state_dir, readonly=not writes)
    try:
        if writes:
            try:
                report = import_catalog(db, Path(args.csv), k=config.music.moods)
            except CatalogError as exc:
                log.error("%s", exc)
                return EXIT_FAILURE
            for line, reason in report.skipped[:20]:
                print(f"{args.csv}:{line}: skipped: {reason}", file=sys.stderr)
            if len(report.skipped) > 20:
                print(f"... and {len(report.skipped) - 20} more skipped rows", file=sys.stderr)
            print(report.summary(args.csv))
            stats = catalog_stats(db)
        else:
            stats = catalog_stats(db)
            if args.json:
                print(json.dumps(stats))
                return 0
        print(f"{stats['tracks']} tracks")
        for mood in stats["moods"]:
            print(
                f"  {mood['mood']:<10} {mood['tracks']:>6} tracks  "
                f"centre valence {mood['valence']:.2f} energy {mood['energy']:.2f}"
            )
        return 0
    finally:
        db.conn.close()


def cmd_recommend(args: argparse.Namespace, config: Config) -> int:
    from appliance.music.catalog import load_moods
    from appliance.music.recommender import Recommender
    from appliance.store.database import open_database

    if not (-1 <= args.valence <= 1 and -1 <= args.arousal <= 1):
        log.error("--valence and --arousal must be in -1..1")
        return EXIT_CONFIG
    if args.n < 1:  # -n -1 sliced the ranking to all songs but the last
        log.error("-n must be at least 1")
        return EXIT_CONFIG
    db = open_database(config.storage.state_dir, readonly=True)
    try:
        moods = load_moods(db, k=config.music.moods)
        if moods is None:
            log.error("the catalog is empty: run emotion-appliance catalog import CSV")
            return EXIT_FAILURE
        picks = Recommender(db, moods, config.music).recommend(
            args.valence, args.arousal, user=args.user or config.music.user, n=args.n
        )
    finally:
        db.conn.close()
    if args.json:
        print(json.dumps([p.to_json() for p in picks]))
    else:
        for p in picks:
            # catalog fields came from a CSV someone else wrote: shown, never obeyed
            print(printable(f"{p.score:.3f}  {p.mood:<10} {p.artist} - {p.name}  ({p.uri})"))
    return 0


def cmd_spotify(args: argparse.Namespace, config: Config) -> int:
    from appliance.music.spotify import SpotifyError, SpotifyPlayer

    try:
        player = SpotifyPlayer(config.spotify, config.storage.state_dir)
        if args.spotify_command == "login":
            url = args.redirect_url
            if not url:
                print("Open this address in a browser on any device and allow access:")
                print(player.authorize_url())
                print("Then paste the address the browser was sent to (it may not load):")
                try:
                    url = input("> ")
                except EOFError:  # no terminal (ssh without -t, a script)
                    log.error("no address given; run it in a terminal or pass --redirect-url")
                    return EXIT_FAILURE
            player.complete_login(url)
            print(f"logged in; token cached in {player.cache.path} (mode 0600)")
            return 0
        found = player.devices()
    except SpotifyError as exc:
        log.error("%s", exc)
        # a secret file that is missing, empty or world-readable needs a person: exit 2
        return EXIT_CONFIG if isinstance(exc, SecretError) else EXIT_FAILURE
    if args.json:
        print(json.dumps(found))
    else:
        for d in found:
            active = " (active)" if d.get("is_active") else ""
            print(printable(f"{d.get('name')}  [{d.get('type')}] id {d.get('id')}{active}"))
        if not found:
            print("no Spotify Connect devices online")
    return 0


def cmd_queue(args: argparse.Namespace, config: Config) -> int:
    from appliance.music import control

    if args.action == "clear":
        cleared, on_spotify = control.clear_queue(config)
        print(f"{cleared} song(s) not sent yet withdrawn (kept in the history as skipped)")
        if on_spotify:
            print(
                f"{on_spotify} already on Spotify's queue stay there: the Web API cannot take"
                " them back (clear them in the Spotify app)"
            )
        return 0
    report = control.queue_report(config)
    print(json.dumps(report) if args.json else control.format_queue(report))
    return 0


def cmd_press(args: argparse.Namespace, config: Config) -> int:
    from appliance.music import control

    stored, text = control.press(config, args.command)
    print(printable(text))  # it names the song: a title from outside
    return 0 if stored else EXIT_FAILURE


def cmd_bench(args: argparse.Namespace, config: Config) -> int:
    from appliance.offline.bench import format_report, run_bench

    # the daemon's config (--config, else the default file if present), as `run` loads it
    report = run_bench(
        args.source,
        threads=args.threads,
        peer=args.peer,
        overrides=args.overrides or [],
        config_path=args.config,
        default_path=DEFAULT_CONFIG_PATH,
    )
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from appliance.offline.report import (
        ReportError,
        format_runs,
        list_runs,
        load_report,
        output_format,
        parse_time,
        render,
    )
    from appliance.store.database import open_database

    out = Path(args.out)
    try:
        if not args.runs:
            output_format(out)  # an unknown extension fails before any work
        since, until = parse_time(args.since), parse_time(args.until)
        db = open_database(config.storage.state_dir, readonly=True)
        try:
            if args.runs:
                print(format_runs(list_runs(db)))
                return 0
            timelines, notes = load_report(db, run=args.run, since=since, until=until)
        finally:
            db.conn.close()
        summary = render(timelines, out, notes=notes)
    except ReportError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    for note in summary["notes"]:
        log.warning("%s", note)
    runs = summary["runs"]
    what = f"run {runs[0]['run_id']}" if len(runs) == 1 else f"{len(runs)} runs"
    print(
        f"{out}: {what}, {summary['samples']} samples, {len(summary['peaks'])} peaks, "
        f"{len(summary['valleys'])} valleys, {len(summary['events'])} song events"
    )
    return 0


def cmd_analyze(args: argparse.Namespace, config: Config) -> int:
    from appliance.offline.analyze import analyze
    from appliance.offline.report import ReportError

    try:
        summary = analyze(
            args.video,
            Path(args.out),
            config,
            fps=args.fps,
            user=args.user,
            condition=args.condition,
            labels=Path(args.labels) if args.labels else None,
            progress=not args.no_progress,
        )
    except ReportError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    sessions = summary["sessions"]
    frames = sum(s["rows"] for s in sessions)
    print(f"{len(sessions)} sessions, {frames} frames -> {summary['study_csv']}")
    for session in sessions:
        print(f"  {session['id']}: {session['rows']} rows -> {session['csv']}")
    if "evaluation" in summary:
        ev = summary["evaluation"]
        print(
            f"against {ev['frames']} labelled frames: accuracy {ev['accuracy']:.1%}, "
            f"macro-F1 {ev['macro_f1']:.3f} (smoothed label); confusion -> {ev['confusion_csv']}"
        )
    return 0


def _broker_address(text: str) -> tuple[str, int]:
    """--broker HOST, HOST:PORT, [IPv6]:PORT or a bare IPv6 address -> (host, port or 0)."""
    host, port = text.strip(), ""
    if host.startswith("[") and "]" in host:
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"--broker {text!r}: expected HOST or HOST:PORT")
    return host, int(port or 0)


def cmd_fleet(args: argparse.Namespace, config: Config) -> int:
    """Read-only: subscribes, prints, creates nothing (no state folder, no database)."""
    import dataclasses
    import time

    from appliance.link.client import LinkError, read_password
    from appliance.link.fleet import collect, format_rows, rows

    settings = config.mqtt
    if args.broker:
        try:
            host, port = _broker_address(args.broker)
        except ValueError as exc:
            log.error("%s", exc)
            return EXIT_CONFIG
        settings = dataclasses.replace(settings, host=host, port=port or settings.port)
    if not settings.host:
        log.error("no broker: pass --broker HOST[:PORT] or set mqtt.host")
        return EXIT_CONFIG
    try:
        seen = collect(settings, read_password(settings), args.wait)
    except LinkError as exc:
        log.error("%s; %s", exc, exc.hint)
        return EXIT_FAILURE
    table = rows(seen, time.time())
    if args.json:
        print(json.dumps(table))
    elif table:
        print(format_rows(table))
    else:
        print(f"no appliance seen under {settings.topic_prefix}/+ on {settings.shown_broker}")
    return 0


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    from appliance.service.doctor import as_json, run_checks

    label = args.config or DEFAULT_CONFIG_PATH
    if args.config is None and not Path(DEFAULT_CONFIG_PATH).is_file():
        label = "built-in defaults"
    checks = run_checks(config, label, camera=not args.no_camera)
    if args.json:
        print(json.dumps(as_json(checks)))
    else:
        for check in checks:
            print(check.line())
    failures = sum(c.status == "fail" for c in checks)
    if not args.json:
        print(f"{failures} problem(s)" if failures else "all checks passed")
    return EXIT_FAILURE if failures else 0


def _subcommand(words: Sequence[str]) -> str | None:
    """The subcommand argv names: its first word that is neither an option nor the value
    of --config/--set (or an abbreviation argparse would accept)."""
    it = iter(words)
    for word in it:
        if word.startswith("-"):
            takes_value = "=" not in word and len(word) > 2
            if takes_value and ("--config".startswith(word) or "--set".startswith(word)):
                next(it, None)
        else:
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. A reader that closed the pipe early
    (`emotion-appliance status | head -1`) ends the command quietly: exit 1, except
    `status`, which keeps its Nagios code."""
    # OpenCV's own warnings ("can't open camera by index", twice per attempt) would fill
    # the journal while a camera is missing; our log says it once. Set before any import
    # of cv2; an administrator's own value wins.
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, where a closed pipe can be caught, not at exit
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_FAILURE


def _main(argv: Sequence[str] | None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:
        print(f"emotion-appliance {__version__}")  # without loading OpenCV and numpy
        return 0
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(words)
    except UsageError as exc:  # usage and message are on stderr already
        if _subcommand(words) == "status":
            return _status_unknown(f"bad arguments: {exc.message}", "--json" in words)
        raise
    overrides = [*(args.overrides or []), *(getattr(args, "sub_overrides", None) or [])]
    args.overrides = overrides
    if args.command == "config" and args.config_command == "check":
        path = args.path or args.config
        try:
            load_config(path, overrides)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
        print(f"{path or DEFAULT_CONFIG_PATH}: ok")
        return 0
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        if args.command == "status":
            first, *more = str(exc).splitlines() or [""]
            extra = f" (and {len(more)} more, on stderr)" if more else ""
            return _status_unknown(f"configuration error: {first}{extra}", args.json)
        return EXIT_CONFIG
    _setup_logging(config, args.verbose)
    if args.command == "config":
        from appliance.config import config_to_toml

        print(config_to_toml(config, redacted=True), end="")
        return 0
    if args.command == "status":
        return cmd_status(args, config)
    from appliance.capture import CaptureError
    from appliance.store.database import StoreError
    from appliance.vision.runtime import ModelError

    commands = {
        "catalog": cmd_catalog,
        "recommend": cmd_recommend,
        "spotify": cmd_spotify,
        "queue": cmd_queue,
        "like": cmd_press,
        "skip": cmd_press,
        "doctor": cmd_doctor,
        "fleet": cmd_fleet,
        "bench": cmd_bench,
        "report": cmd_report,
        "analyze": cmd_analyze,
    }
    try:
        return commands.get(args.command, cmd_run)(args, config)
    except (SecretError, ModelError) as exc:
        # a missing, corrupt or mismatched model file needs a person, like a bad secret:
        # exit 2, which systemd does not restart (a retry every 15 s would change nothing)
        log.error("%s", exc)
        return EXIT_CONFIG
    except (CaptureError, StoreError) as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
