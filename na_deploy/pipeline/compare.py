"""`na-deploy pipeline --compare VARIANTS`: the paper's Tables 4-5 and Datta et al.'s techniques side by side.

One full-precision training, then one QAT run per distinct `Training` of the variants (same fp weights, same seed),
then, per variant, conversion in its mode, fixed point, accuracy vs T (quantized ANN, float SNN, integer SNN),
spikes per inference and steps per inference from the integer reference, and a Lava verify of the variant's
integer net on --verify-samples samples at --verify-timesteps (or the reason Lava cannot run it). Writes
`compare.json` (also report.json's "compare"), `compare.md` (the tables) and `compare_accuracy.png` into the run
folder, built as `<out>.partial` and renamed only when complete (like `run_pipeline`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from na_deploy.atomic import atomic_write_text
from na_deploy.checks import check_timesteps
from na_deploy.pipeline.environment import run_environment
from na_deploy.pipeline.variants import Inference, Training, Variant
from na_deploy.errors import BackendFailure, NaDeployError
from na_deploy.data.loaders import first_test_images
from na_deploy.ir.offset_calibration import steps_per_inference
from na_deploy.protocols import Target, require_fit


def _train(cfg, data, run_dir: Path, variants: list[Variant], timer, log) -> dict[Training, Path]:
    """fp.ckpt (from --weights when given: every arm starts from them), then qat_<tag>.ckpt per distinct
    Training (same fp weights and seed)."""
    from na_deploy.pipeline.fp_start import fp_checkpoint
    from na_deploy.training.loop import train_qat

    with timer("train_fp"):
        fp_checkpoint(cfg, data, run_dir / "fp.ckpt", progress=False, log=log)
    out: dict[Training, Path] = {}
    for tr in dict.fromkeys(v.training for v in variants):
        path = run_dir / f"qat_{tr.tag}.ckpt"
        with timer(f"train_qat_{tr.tag}"):
            train_qat(data, run_dir / "fp.ckpt", p=cfg.p, noise_adaptor=tr.noise_adaptor, epochs=cfg.epochs_qat,
                      lr=cfg.lr_qat, seed=cfg.seed, device=cfg.device, batch_size=cfg.batch_size, out=path,
                      weight_decay=cfg.weight_decay, l1_sparsity=tr.l1, noise_range=tr.noise_range,
                      progress=False)
        log(f"[compare] QAT {tr.tag} -> {path.name}")
        out[tr] = path
    return out


def convert_variant(ckpt: Path, inf: Inference, target: Target, max_timesteps: int,
                    bias_shift_timesteps: Optional[int] = None):
    """(FloatNet, IntNet) of one checkpoint for one inference choice; the IntNet passes the fit check."""
    from na_deploy.convert import convert_checkpoint

    fnet = convert_checkpoint(ckpt, neuron=inf.neuron, offset_steps=inf.offset_steps,
                              bias_shift_timesteps=bias_shift_timesteps if inf.bias_shift else None)
    inet = target.to_fixed_point(fnet, max_timesteps=max_timesteps)
    require_fit(target, inet)
    return fnet, inet


def _groups(inf: Inference, timesteps: list[int]) -> list[tuple[Optional[int], list[int]]]:
    """(bias-shift T or None, the T evaluated on that net): a bias-shifted variant needs one net per T (the
    shift is v0 / T per step); offset calibration runs only where T >= rho."""
    ts = [T for T in timesteps if T >= inf.offset_steps]
    return [(T, [T]) for T in ts] if inf.bias_shift else ([(None, ts)] if ts else [])


def _messages(trace) -> int:
    """Messages sent (`Trace.events()`: negative spikes and offset calibration's stage 1 included)."""
    return sum(int(np.asarray(c).sum()) for c in trace.events().values())


def _evaluate(v: Variant, ckpt: Path, cfg, x, y, target: Target, timesteps: list[int], timer, log) -> dict:
    """Accuracy (float, integer), spikes and steps per inference vs T of one variant on the test samples x, y.
    The integer net runs chunk by chunk (`auto_batch_size`: one chunk's traces within 256 MiB) keeping only
    tallies, so memory does not grow with the test set (a resnet20 on 500 images at T <= 32 took 22 GB at once)."""
    from na_deploy.evaluate.accuracy import auto_batch_size, iter_chunks
    from na_deploy.simulate.float_snn import simulate_float

    res = {"float": {}, "integer": {}, "spikes_per_inference": {}, "steps_per_inference": {}}
    top = max(*timesteps, cfg.verify_timesteps)
    with timer(f"evaluate_{v.name}"):
        for shift_T, ts in _groups(v.inference, timesteps):
            fnet, inet = convert_variant(ckpt, v.inference, target, top, shift_T)
            fres = simulate_float(fnet, x, ts, labels=y, device=cfg.device, progress=False)
            correct, messages = dict.fromkeys(ts, 0), dict.fromkeys(ts, 0)
            for xb, yb in iter_chunks(x, y, auto_batch_size(inet, len(ts))):
                traces = target.reference_simulate_multi(inet, xb, ts, device=cfg.device, progress=False)
                for T in ts:
                    correct[T] += int((traces[T].predictions == yb).sum())
                    messages[T] += _messages(traces[T])
                del traces
            for T in ts:
                res["float"][T] = float(fres.accuracy[T])
                res["integer"][T] = correct[T] / len(y)
                res["spikes_per_inference"][T] = messages[T] / max(len(y), 1)
                res["steps_per_inference"][T] = steps_per_inference(inet, T)
    log(f"[compare] {v.name}: " + " ".join(f"T={T} {100 * a:.2f}%" for T, a in res["integer"].items()))
    return res


def _verify_variant(v: Variant, ckpt: Path, cfg, data, target: Target, timer) -> dict:
    """Lava (the target's backend for the net) vs the reference on the first --verify-samples test samples."""
    from na_deploy.verify.bit_exact import verify

    n, T = int(cfg.verify_samples), int(cfg.verify_timesteps)
    section = {"samples": n, "timesteps": T, "bit_exact": None}
    if n == 0:
        return section
    if T < v.inference.offset_steps:
        return {**section, "reason": f"--verify-timesteps {T} < offset calibration steps {v.inference.offset_steps}"}
    _, inet = convert_variant(ckpt, v.inference, target, max(*cfg.timesteps, T), T)
    try:
        backend = target.backend(net=inet)
        with timer(f"verify_{v.name}"):
            r = verify(inet, first_test_images(data, n)[0], T, target, backend).to_dict()
    except BackendFailure:  # the backend broke (a dead Lava worker, a hang): exit 3, not a "reason"
        raise
    except NaDeployError as e:  # a mode the backend cannot run: the reason, not a crash
        return {**section, "reason": str(e)}
    return {**section, "bit_exact": bool(r["equal"]), "mismatches": int(r["mismatching_samples"]),
            "backend": getattr(backend, "name", str(backend)), "first_mismatch": r.get("first_mismatch")}


def _ann_accuracy(ckpt: Path, x, y, cfg) -> float:
    from na_deploy.simulate.ann import ann_forward, argmax_lowest
    from na_deploy.convert import convert_checkpoint

    logits, _ = ann_forward(convert_checkpoint(ckpt), x, device=cfg.device, progress=False)
    return float((argmax_lowest(logits).numpy() == y).mean())


def _run(cfg, variants, target, data, run_dir: Path, timer, log) -> dict:
    ckpts = _train(cfg, data, run_dir, variants, timer, log)
    timesteps = check_timesteps(cfg.timesteps)
    x, y = first_test_images(data, cfg.eval_samples or data.num_test)  # evaluated by every variant
    ann = {tr: _ann_accuracy(p, x, y, cfg) for tr, p in ckpts.items()}
    rows = {}
    for v in variants:
        ck = ckpts[v.training]
        row = _evaluate(v, ck, cfg, x, y, target, timesteps, timer, log)
        rows[v.name] = {"training": {"noise_adaptor": v.training.noise_adaptor, "l1": v.training.l1,
                                     "checkpoint": ck.name},
                        "inference": {"neuron": v.inference.neuron, "offset_steps": v.inference.offset_steps,
                                      "bias_shift": v.inference.bias_shift},
                        "ann_accuracy": ann[v.training], **row,
                        "verify": _verify_variant(v, ck, cfg, data, target, timer)}
    return {"variants": rows, "order": [v.name for v in variants], "timesteps": timesteps}


def run_compare(cfg, variants: list[Variant], target: Target, out: str | Path, force: bool = False,
                log: Callable[[str], None] = print) -> dict:
    """Train, evaluate and verify every variant; write compare.{json,md,png} and report.json; return the
    "compare" dict. The run folder appears (renamed from `<out>.partial`) only when everything finished."""
    from na_deploy.pipeline.compare_report import format_compare_md, plot_compare
    from na_deploy.pipeline.run import load_run_data
    from na_deploy.pipeline.run_folder import StageTimer, run_folder

    cfg.validate()
    timer = StageTimer()
    data = load_run_data(cfg, log)
    from na_deploy.pipeline.fp_start import check_start

    check_start(cfg, data)  # model, builder, weights, ops: refused before the run folder exists
    t0 = time.perf_counter()
    with run_folder(out, force, log, "compare") as (_, run_dir):
        comp = _run(cfg, variants, target, data, run_dir, timer, log)
        comp["command_config"] = {"model": cfg.model, "data": data.name, "p": cfg.p, "seed": cfg.seed,
                                  "epochs_fp": cfg.epochs_fp, "epochs_qat": cfg.epochs_qat,
                                  "eval_samples": cfg.eval_samples or int(data.num_test)}
        if cfg.weights is not None:
            from na_deploy.pipeline.fp_start import weights_config

            comp["command_config"].update(weights_config({"weights": cfg.weights, "reset_head": cfg.reset_head}))
        report = {"compare": comp, "environment": run_environment(cfg.device),  # issue 20
                  "timings_s": {**timer.timings, "total": round(time.perf_counter() - t0, 3)}}
        plot_compare(comp, run_dir / "compare_accuracy.png", title=f"{cfg.model} on {data.name}, p={cfg.p}")
        text = json.dumps(report, indent=2, sort_keys=True, default=float)
        atomic_write_text(run_dir / "compare.json", json.dumps(comp, indent=2, sort_keys=True, default=float))
        atomic_write_text(run_dir / "report.json", text)
        atomic_write_text(run_dir / "compare.md", format_compare_md(comp))
        atomic_write_text(run_dir / "COMPLETE", "finished\n")
    return comp


__all__ = ["run_compare", "convert_variant"]
