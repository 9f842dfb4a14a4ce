#!/usr/bin/env python3
"""Regenerate the files derived from the code: example.toml, the README's configuration
tables (between the `config-tables` markers, from the config schema) and its table of
capture sources (between the `sources-table` markers, from the source registry). Run
after changing a key or a source kind.

    python tools/update_docs.py          # rewrite
    python tools/update_docs.py --check  # exit 1 if either is stale (the tests do this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.config import EXAMPLE_CONFIG_PATH, Config, config_to_toml  # noqa: E402
from appliance.config.loader import config_to_markdown  # noqa: E402
from appliance.sources import sources_markdown  # noqa: E402

README = ROOT / "README.md"
GENERATED = {"config-tables": config_to_markdown, "sources-table": sources_markdown}


def readme_with_tables(text: str) -> str:
    for name, make in GENERATED.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not found or not found_end:
            raise SystemExit(f"{README}: markers {begin} / {end} missing")
        body = make()
        text = f"{head}{begin}\n{body}{'' if body.endswith(chr(10)) else chr(10)}{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    wanted = {
        EXAMPLE_CONFIG_PATH: config_to_toml(Config()),
        README: readme_with_tables(README.read_text(encoding="utf-8")),
    }
    stale = [path for path, text in wanted.items() if path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run python tools/update_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
