"""The whole job: full-precision training -> QAT -> conversion -> fixed point -> export -> verify -> accuracy vs T,
its variants side by side, and the reports.

Modules:
  run             `run_pipeline(config, target, out)` with a `PipelineConfig`; the run folder; `format_summary`
  presets         `pipeline --preset NAME`: `PRESETS`, `resolve_config`
  variants        `pipeline --compare`'s variant names (`parse_variants` -> `Variant`)
  compare         `run_compare`: every variant trained, evaluated and verified, side by side
  compare_report  the tables and the plot of `--compare`
  neuron_modes    `pipeline --neuron MODE`: the report's columns of each neuron mode
  from_nir        `pipeline --from-nir`: the pipeline without training, from a NIR graph

`run_compare` loads on first use (`__getattr__`): its module imports torch at import time, and the presets and
variants should stay cheap to import.
"""
from na_deploy.pipeline.presets import PRESETS, resolve_config
from na_deploy.pipeline.run import PipelineConfig, format_summary, run_pipeline
from na_deploy.pipeline.variants import Variant, parse_variants

__all__ = ["run_pipeline", "PipelineConfig", "format_summary", "PRESETS", "resolve_config", "parse_variants",
           "Variant", "run_compare"]


def __getattr__(name: str):
    """`run_compare` of `na_deploy.pipeline.compare`, imported when first asked for (PEP 562)."""
    if name == "run_compare":
        from na_deploy.pipeline.compare import run_compare

        return run_compare
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
