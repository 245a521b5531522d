"""Rewrite the `--help` blocks of docs/cli.md from the CLI itself (tests/test_docs.py checks they agree).

    .venv/bin/python scripts/cli_docs.py

Each section `## na-deploy` / `## <command>` holds the first ```text block after its heading; that block is
replaced by `na-deploy [<command>] --help` as click prints it at the width the test uses. Written atomically.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

HELP_WIDTH = 78  # click's width when the output is not a terminal (what `na-deploy X --help | cat` prints)
PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def help_text(cli: click.Group, args: list[str]) -> str:
    result = CliRunner().invoke(cli, args + ["--help"], prog_name="na-deploy", terminal_width=HELP_WIDTH)
    if result.exit_code != 0:
        raise SystemExit(f"error: na-deploy {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return result.output.rstrip("\n")


def rewrite(page: str, cli: click.Group) -> str:
    for name in ["na-deploy"] + cli.list_commands(click.Context(cli)):
        args = [] if name == "na-deploy" else [name]
        pattern = re.compile(rf"(^## {re.escape(name)}\n.*?```text\n)(.*?)(\n```)", re.S | re.M)
        if not pattern.search(page):
            raise SystemExit(f"error: docs/cli.md has no section '## {name}' with a ```text block; add one")
        page = pattern.sub(lambda m: m.group(1) + help_text(cli, args) + m.group(3), page, count=1)
    return page


def main() -> int:
    from na_deploy.atomic import atomic_path
    from na_deploy.cli.main import cli

    new = rewrite(PAGE.read_text(), cli)
    with atomic_path(PAGE) as tmp:
        Path(tmp).write_text(new)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
