"""The full-precision start of a pipeline run (issue 19): trained from the registry's / builder's initialisation,
or from the user's weights (`pipeline --weights FILE [--reset-head]`, strict load), or, with `--epochs-fp 0`,
the weights as they are (the paper's §5.1: QAT from a pretrained full-precision model). `check_start` refuses a
bad model, builder, weights file or op in one line before the run folder exists, and, for a model from outside
the registry, a network the converter refuses (tried once on the untrained quantized model: a structural
check, so no QAT is spent on a net that cannot convert); `weights_config` is what report.json's config records
of the weights file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional


def check_start(cfg, data) -> None:
    """The model of the run (cfg.model with cfg.weights, for the data's shape and classes) can be built,
    loaded and quantized (`pretrained.check_model_before_writing`) and, when it comes from outside the registry,
    converted (`to_floatnet` without the self-check); one-line error otherwise. Nothing to check for --from-nir."""
    if cfg.from_nir is not None:
        return
    import torch

    from na_deploy.errors import ConversionError
    from na_deploy.training.loop import model_kwargs_for
    from na_deploy.training.model_spec import is_external
    from na_deploy.training.pretrained import check_model_before_writing

    qmodel = check_model_before_writing(cfg.model, model_kwargs_for(data, None), cfg.weights, cfg.reset_head, cfg.p)
    if not is_external(cfg.model):  # the registry's networks convert by construction (tests/test_models.py)
        return
    from na_deploy.convert import to_floatnet

    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            to_floatnet(qmodel.eval(), tuple(data.input_shape), data.normalization.channel_scale, self_check=False,
                        name=cfg.model)
    except ConversionError as e:
        raise ConversionError(f"--model {cfg.model}: does not convert to an SNN ({e})") from e


def fp_checkpoint(cfg, data, out: Path, progress: bool = True, log: Optional[Callable[[str], None]] = None):
    """Write the run's full-precision checkpoint `out`: `train_full_precision` for cfg.epochs_fp epochs (from
    cfg.weights when given), or, with weights and epochs_fp 0, `pretrained_fp` (no training)."""
    from na_deploy.training.loop import train_full_precision
    from na_deploy.training.pretrained import pretrained_fp

    if cfg.weights is not None and cfg.epochs_fp == 0:
        return pretrained_fp(data, cfg.model, cfg.weights, reset_head=cfg.reset_head, seed=cfg.seed,
                             device=cfg.device, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                             out=str(out), log=log)
    return train_full_precision(data, cfg.model, epochs=cfg.epochs_fp, lr=cfg.lr_fp, seed=cfg.seed, device=cfg.device,
                                batch_size=cfg.batch_size, out=str(out), weight_decay=cfg.weight_decay,
                                progress=progress, weights=cfg.weights, reset_head=cfg.reset_head, log=log)


def weights_config(config: dict) -> dict:
    """report.json's config: without weights / reset_head when not given (a run without --weights keeps its
    bytes), else with "weights" (the path as given) and "weights_sha256" (and reset_head when set)."""
    out = {k: v for k, v in config.items() if k not in ("weights", "reset_head")}
    if config.get("weights") is not None:
        from na_deploy.training.weights import weights_record

        out.update(weights=config["weights"], weights_sha256=weights_record(config["weights"])["sha256"])
        if config.get("reset_head"):
            out["reset_head"] = True
    return out


__all__ = ["check_start", "fp_checkpoint", "weights_config"]
