"""Evaluation of a converted network: accuracy vs time steps, occasional noise, plots.

Modules:
  accuracy          `accuracy_vs_timesteps` -> `AccuracyResult`: quantized ANN, float SNN and integer SNN (a
                    target's reference) vs T, streamed in chunks; `format_accuracy_table`
  occasional_noise  `noise_report` -> `NoiseReport`: occasional noise and the off-grid share per layer; tables
  plots             accuracy vs T, spikes per layer, occasional noise (PNG, matplotlib)

The plot functions load on first use (`__getattr__`): matplotlib stays out of `import na_deploy.evaluate`.
"""
from na_deploy.evaluate.accuracy import AccuracyResult, accuracy_vs_timesteps, format_accuracy_table
from na_deploy.evaluate.occasional_noise import NoiseReport, format_noise_table, noise_report

PLOTS = ("plot_accuracy_vs_t", "plot_layer_activity", "plot_occasional_noise")

__all__ = ["accuracy_vs_timesteps", "AccuracyResult", "format_accuracy_table", "noise_report", "NoiseReport",
           "format_noise_table", *PLOTS]


def __getattr__(name: str):
    """The plot functions of `na_deploy.evaluate.plots`, imported when first asked for (PEP 562)."""
    if name in PLOTS:
        from na_deploy.evaluate import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
