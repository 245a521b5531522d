"""`na-deploy`: the click application. Thin: it parses options and calls library functions.

Each command lives in the module named after it beside this one (`import` in import_nir.py, `verify-merge` in
verify_merge.py) and loads lazily (so `--help` is instant and a command's heavy imports, torch or Lava, happen
only when it runs); what several commands share (options, checks, the one-line error rule) is in options.py.
Any `NaDeployError` becomes a one-line `error: ...` on stderr and exit code 2.
"""
from __future__ import annotations

import importlib

import click

from na_deploy.errors import NaDeployError

from na_deploy.cli.options import UserError, one_line_errors, parse_timesteps  # noqa: F401  (their home is options)

COMMANDS = {
    "train": "na_deploy.cli.train:train",
    "quantize": "na_deploy.cli.quantize:quantize",
    "convert": "na_deploy.cli.convert:convert",
    "simulate": "na_deploy.cli.simulate:simulate",
    "export": "na_deploy.cli.export:export",
    "import": "na_deploy.cli.import_nir:import_nir",
    "verify": "na_deploy.cli.verify:verify",
    "verify-merge": "na_deploy.cli.verify_merge:verify_merge",
    "pipeline": "na_deploy.cli.pipeline:pipeline",
    "seeds-merge": "na_deploy.cli.seeds_merge:seeds_merge",
    "report": "na_deploy.cli.report:report",
}

SHORT_HELP = {
    "train": "Train a full-precision ANN (step 0).",
    "quantize": "Quantization-aware training with the noise adaptor (step 1).",
    "convert": "Checkpoint -> IF SNN -> Loihi 2 fixed point (.nad.h5) (steps 2-3).",
    "simulate": "Accuracy vs T: ANN, float SNN, integer SNN; occasional noise.",
    "export": "Export a .nad.h5 as a runnable Lava graph (step 4) or a NIR file.",
    "import": "Import a NIR graph (.nir) as a .nad.h5 net.",
    "verify": "Reference simulator vs Lava, per layer, every sample (step 5).",
    "verify-merge": "Merge verify --shard JSON reports into one verdict.",
    "pipeline": "The whole job: train -> quantize -> convert -> export -> verify.",
    "seeds-merge": "Merge single-seed pipeline runs into one report with intervals.",
    "report": "Loihi 2 resources, synaptic ops, spikes and energy estimate.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod, attr = COMMANDS[name].split(":")
        try:
            cmd = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:  # a command module missing from this build
            reason = str(e)

            @click.command(name=name, help=f"(unavailable: {reason})")
            def cmd():
                raise UserError(f"command {name!r} is not available in this build: {reason}")
        cmd.short_help = SHORT_HELP.get(name)
        return cmd

    def format_commands(self, ctx, formatter):
        rows = [(n, SHORT_HELP.get(n, "")) for n in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NaDeployError as e:
            raise UserError(str(e)) from e


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="na-deploy")
def cli():
    """na-deploy: noise-adaptor quantization -> integrate-and-fire SNN -> Loihi 2 fixed point -> Lava,
    verified bit-exact against a CPU reference simulator.

    Typical flow: quantize -> convert -> export -> verify, or `pipeline` for all of it.
    """


def main() -> None:
    cli(prog_name="na-deploy")


if __name__ == "__main__":
    main()
