"""`na-deploy seeds-merge`: finished single-seed runs (`pipeline --seed s`, or the OUT/seed-<s>/ folders of
`pipeline --seeds`, run as separate jobs) -> one multi-seed report (`na_deploy.pipeline.seeds.merge_seed_runs`)."""
from __future__ import annotations

import click

from na_deploy.cli.options import one_line_errors


@click.command("seeds-merge", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the merged report.")
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out.")
@one_line_errors
def seeds_merge(run_dirs: tuple[str, ...], out: str, force: bool) -> None:
    """Merge finished runs of one command that differ only in --seed (pipeline, with --compare-no-noise-adaptor
    or --compare VARIANTS) into OUT/report.json, report.md and accuracy_vs_T.png: per_seed, stats (mean, std,
    95 % t interval over seeds) and the paired effects, as `pipeline --seeds` writes them. Refuses unfinished
    runs, different configs and a seed given twice. Exit 1 if a seed's verify was not bit-exact."""
    from na_deploy.pipeline.seeds import failed_verifies, merge_seed_runs
    from na_deploy.pipeline.seeds_report import seeds_tables

    report = merge_seed_runs(list(run_dirs), out, force=force)
    click.echo("\n".join(seeds_tables(report)))
    click.echo(f"merged {len(run_dirs)} seed runs -> {out}")
    bad = failed_verifies(report)
    if bad:
        click.echo(f"not bit-exact: {', '.join(bad)}", err=True)
        click.get_current_context().exit(1)
