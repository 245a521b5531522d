"""`na-deploy verify-merge`: the JSON reports of `na-deploy verify --shard i/n` runs -> one verdict
(`na_deploy.verify.shards.merge_reports`; its text: `na_deploy.verify.report_text.format_merged`)."""
from __future__ import annotations

import json
from typing import Optional

import click

from na_deploy.cli.options import check_outputs, is_stdout, one_line_errors


@click.command("verify-merge", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, metavar="SHARD.json...")
@click.option("--json", "json_out", default=None, metavar="FILE", help="Also write the merged report (atomically).")
@one_line_errors
def verify_merge(files: tuple[str, ...], json_out: Optional[str]) -> None:
    """Merge the JSON reports of `na-deploy verify --shard i/n --json FILE` runs into one verdict: per-layer
    totals, first mismatch (lowest sample id), shards missing. Refuses reports of different nets, data, T or
    backends, and overlapping samples. Exit 0 when every shard is present and passed, 1 otherwise, 2 on a
    bad request."""
    from na_deploy.verify.report_text import format_merged
    from na_deploy.verify.shards import load_report, merge_reports

    check_outputs({"--json": json_out}, inputs=files, stdout_ok=("--json",))
    reports = [load_report(f) for f in files]
    merged = merge_reports(reports, names=list(files))
    for line in format_merged(merged):
        click.echo(line, err=is_stdout(json_out))  # `--json -`: stdout is the JSON alone
    if is_stdout(json_out):
        click.echo(json.dumps(merged, indent=2))
    elif json_out:
        from na_deploy.atomic import atomic_write_text

        atomic_write_text(json_out, json.dumps(merged, indent=2) + "\n")
    if not merged["passed"]:
        click.get_current_context().exit(1)
