"""`pipeline --from-nir MODEL.nir --data x.npz` (issue 10): the pipeline without training. The NIR graph (a
na-deploy FloatNet export, or another framework's graph imported in mode zero by `io.nir_foreign`) is made
fixed point for the largest T the run uses, then goes through the usual Lava export, verify and accuracy vs T
(`pipeline._run_stages`). Kept apart from `pipeline` so that module stays within the size rule."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from na_deploy.evaluate.accuracy import accuracy_vs_timesteps
from na_deploy.checks import check_timesteps
from na_deploy.errors import NaDeployError
from na_deploy.ir import FloatNet
from na_deploy.protocols import Target, require_fit
from na_deploy.verify.provenance import save_net_pair

TRAINING_KEYS = ("model", "p", "epochs_fp", "epochs_qat", "lr_fp", "lr_qat", "batch_size", "weight_decay",
                 "compare_no_noise_adaptor", "neuron", "preset", "weights", "reset_head")


def nir_arm(cfg, data, target: Target, run_dir: Path, timer, log: Callable) -> tuple:
    """Import cfg.from_nir, fixed point, write net.float.nad.h5 / net.nad.h5, accuracy vs T on the test split:
    (fnet, inet, x, AccuracyResult), the fields of pipeline.ArmResult."""
    from na_deploy.io.nir_io import load_nir

    x, y = data.x_test, data.y_test
    if cfg.eval_samples:
        x, y = x[: cfg.eval_samples], y[: cfg.eval_samples]
    with timer("convert"):
        fnet = load_nir(cfg.from_nir)
        if not isinstance(fnet, FloatNet):
            raise NaDeployError(f"--from-nir {cfg.from_nir}: holds a fixed-point net (IntNet); the pipeline "
                                "needs a float net (verify an IntNet with `na-deploy verify`)")
        if tuple(x.shape[1:]) != tuple(fnet.input.shape):
            raise NaDeployError(f"--data: images are {tuple(x.shape[1:])}, the NIR graph's input is "
                                f"{tuple(fnet.input.shape)}")
        inet = target.to_fixed_point(fnet, max_timesteps=max(*cfg.timesteps, cfg.verify_timesteps))
        require_fit(target, inet)
        save_net_pair(fnet, inet, run_dir / "net.float.nad.h5", run_dir / "net.nad.h5")
    timesteps = check_timesteps(cfg.timesteps)
    with timer("evaluate"):
        acc = accuracy_vs_timesteps(fnet, inet, target, x, y, timesteps, device=cfg.device, progress=False)
        if any(n.neuron.name != "subtract" for n in fnet.nodes):
            acc.noise = {}  # occasional noise (counts vs k x ANN level) is a subtract-mode identity
    log(f"[from-nir {Path(cfg.from_nir).name}] ANN-equivalent {acc.ann_accuracy:.4f} | "
        + " ".join(f"T={T}: float {acc.float_accuracy[T]:.4f} int {acc.integer_accuracy[T]:.4f}"
                   for T in timesteps))
    return fnet, inet, x, acc


def nir_config(cfg, config: dict) -> dict:
    """report.json's "config": a training run's as before (no from_nir; neuron only when given), a --from-nir
    run's without the training options it did not use."""
    drop = set(TRAINING_KEYS) if cfg.from_nir is not None else {"from_nir"}
    drop |= {k for k in ("neuron", "preset") if getattr(cfg, k) is None}  # as before when not given
    return {k: v for k, v in config.items() if k not in drop}
