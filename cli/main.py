"""`na-deploy`: the click application. Thin: it parses options and calls library functions.

Each command lives in the module named after it beside this one (`import` in import_nir.py, `verify-merge` in
verify_merge.py) and loads lazily (so `--help` is instant and a command's heavy imports, torch or Lava, happen
only when it runs); what several commands share (options, checks, the one-line error rule) is in options.py.
Any `NaDeployError` becomes a one-line `error: ...` on stderr and exit code 2 (a `BackendFailure`: exit code 3).

Exit codes (every command; docs/cli.md "Exit codes"):
  0    passed / done;
  1    a check failed (verify, verify-merge, pipeline: backend != reference, provenance, fidelity, golden);
  2    a usage or input error, or an output that cannot be written (one line `error: ...`, nothing written);
  3    the backend failed while running: a Lava worker died, a Lava run hung past its timeout, a `--jobs` shard
       crashed (one line `error: ...` naming the worker / shard; Lava torn down, nothing written);
  130  interrupted (Ctrl-C), 143 terminated (SIGTERM): one line `interrupted: ...` saying what was stopped
       (the Lava processes) and what was left; `finally` blocks (Lava's stop, temporary files) run first.
"""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import signal
import sys

import click

from na_deploy.errors import NaDeployError

from na_deploy.cli.options import UserError, one_line_errors, parse_timesteps  # noqa: F401  (their home is options)
from na_deploy.cli.options import as_click_error, refuse_flag_values

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
        return refuse_flag_values(cmd)

    def format_commands(self, ctx, formatter):
        rows = [(n, SHORT_HELP.get(n, "")) for n in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NaDeployError as e:
            raise as_click_error(e) from e

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main, with every failure on one line and the exit codes of the module docstring."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from na_deploy.runlock import forget_left, forget_stopped

        forget_left()  # what this command leaves and stops, not what an earlier command of this process did
        forget_stopped()
        with sigterm_raises():
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.ClickException as e:
                click.echo(f"error: {one_line(e)}", err=True)
                sys.exit(e.exit_code)
            except (click.exceptions.Abort, KeyboardInterrupt):
                sys.exit(interrupted("interrupted", 130))
            except Terminated:
                sys.exit(interrupted("terminated (SIGTERM)", 143))
            except OSError as e:
                if e.errno == errno.EPIPE:  # stdout closed by a pager / head: nothing more to say
                    sys.exit(0)
                if e.filename is None:
                    raise
                click.echo(f"error: {e.filename}: {e.strerror or e}", err=True)
                sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so `finally` blocks (Lava's stop, temporary files) run."""


def one_line(e: click.ClickException) -> str:
    """A click error as one line: its message, and for a usage error the command's help to read."""
    msg = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        msg += f" (see `{ctx.command_path} --help`)"
    return msg


def interrupted(what: str, code: int) -> int:
    """Print `<what>: <what was left>` on stderr; return the exit code."""
    from na_deploy.runlock import left_behind, stopped_cleanly

    left = left_behind()
    said = f"left {', '.join(left)} (not marked complete)" if left else \
        "nothing half-written left (outputs are written atomically)"
    click.echo(f"{what}: {''.join(s + '; ' for s in stopped_cleanly())}{said}", err=True)
    return code


@contextlib.contextmanager
def sigterm_raises():
    """While the CLI runs, SIGTERM raises `Terminated` (main thread only; the old handler comes back after)."""
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:  # a forked child (a Lava worker) before it set its own handler: die quietly
            os._exit(128 + signal.SIGTERM)
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


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
