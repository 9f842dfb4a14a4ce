"""`emotion-appliance` command line: run, status, config check, version.

Exit codes: 0 ok; 1 runtime failure (camera, models); 2 configuration error (systemd
does not restart on it); `status` uses the Nagios codes 0-3.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import IO

from appliance import __version__
from appliance.capture import SOURCE_SPECS_HELP, CaptureError
from appliance.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from appliance.pipeline import FrameResult
from appliance.service.status import assess, format_status, read_status
from appliance.store.database import StoreError
from appliance.vision.runtime import ModelError

log = logging.getLogger("appliance")

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
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
        dest="overrides",
        default=default,
        help="override one setting; repeatable",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default or False, help="debug logging"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


def _setup_logging(config: Config | None, verbose: bool) -> None:
    level = "DEBUG" if verbose else (config.logging.level if config else "INFO")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
            shown = emotion or "(no face)"
            print(
                f"{result.t:8.2f}s  {shown:<10} confidence {result.smoothed.confidence:.2f}",
                file=self.out,
                flush=True,
            )

    def summary(self) -> str:
        if not self.frames:
            return "no frames processed"
        return (
            f"{self.frames} frames, face found in {100 * self.with_face / self.frames:.1f}%, "
            f"{self.total_ms / self.frames:.2f} ms per frame (detect+classify+smooth)"
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
    stale_after = max(10.0, 5 * config.service.status_interval_s)
    code, reason = assess(snapshot, stale_after)
    if args.json:
        print(json.dumps({"code": code, "reason": reason, "status": snapshot}, sort_keys=True))
    else:
        print(format_status(snapshot, code, reason))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = args.overrides or []
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
        return EXIT_CONFIG
    _setup_logging(config, args.verbose)
    if args.command == "config":
        from appliance.config import config_to_toml

        print(config_to_toml(config), end="")
        return 0
    if args.command == "status":
        return cmd_status(args, config)
    try:
        return cmd_run(args, config)
    except (ModelError, CaptureError, StoreError) as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
