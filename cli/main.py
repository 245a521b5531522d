"""`na-deploy`: the click application. Thin: it parses options and calls library functions.

Commands live in small modules beside this one and load lazily (so `--help` is instant and a command's
heavy imports, torch or Lava, happen only when it runs). Any `NaDeployError` becomes a one-line
`error: ...` on stderr and exit code 2.
"""
from __future__ import annotations

import functools
import importlib

import click

from na_deploy.errors import NaDeployError

COMMANDS = {
    "train": "na_deploy.cli.train_cmds:train",
    "quantize": "na_deploy.cli.train_cmds:quantize",
    "convert": "na_deploy.cli.convert_cmds:convert",
    "simulate": "na_deploy.cli.convert_cmds:simulate",
    "export": "na_deploy.cli.lava_cmds:export",
    "import": "na_deploy.cli.nir_cmds:import_nir",
    "verify": "na_deploy.cli.verify_cmds:verify",
    "verify-merge": "na_deploy.cli.verify_jobs:verify_merge",
    "pipeline": "na_deploy.cli.pipeline_cmds:pipeline",
    "report": "na_deploy.cli.pipeline_cmds:report",
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
    "report": "Loihi 2 resources, synaptic ops, spikes and energy estimate.",
}


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def one_line_errors(fn):
    """NaDeployError -> `error: <message>` and exit code 2 (also when the command is invoked directly)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NaDeployError as e:
            raise UserError(str(e)) from e
    return wrapper


def parse_timesteps(value: str) -> list[int]:
    """`--timesteps 1,2,4` -> sorted unique positive ints (the rule of `na_deploy.checks`); NaDeployError otherwise."""
    from na_deploy.checks import check_timesteps  # numpy: imported when a command runs, not for --help

    try:
        return check_timesteps([int(v) for v in str(value).split(",") if v.strip()])
    except (ValueError, NaDeployError):
        pass
    raise NaDeployError(f"--timesteps {value!r}: expected comma-separated positive integers, e.g. 1,2,4,8")


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
