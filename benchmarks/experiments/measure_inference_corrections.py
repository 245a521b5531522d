"""Accuracy and spikes per inference of the inference-time corrections (issue 12 items 1-3) on one QAT checkpoint:
neuron modes subtract / negative (QFFS signed spikes) / accumulate (Datta's accumulate-then-fire) and subtract +
two-stage offset calibration (COS, rho = 2 and 4), float SNN and Loihi 2 integer SNN (bit-exact reference), at
T = 1, 2, 4, 8, 16, 32.

    .venv/bin/python benchmarks/experiments/measure_inference_corrections.py --ckpt runs/zero/qat.ckpt [--json out.json]

Every variant is made by `na_deploy.convert.neuron_modes.convert_inference_mode(FloatNet, mode, offset_steps)`
from the checkpoint's subtract FloatNet, then `TARGET.to_fixed_point(max_timesteps=32)` (its own fixed point:
the negative mode's bound covers signed inputs). Spikes per inference = every spike message of every node per
test image (|z| for signed spikes; offset calibration's first stage included), from the integer reference
(`Trace.event_counts`) and the float SNN (`FloatSimResult.events`). Steps = one inference's global steps
through the pipelined net (`offset_calibration.steps_per_inference`: T + depth; accumulate T per spiking layer
more; offset rho + depth more). A T below rho is not run ("-").
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from na_deploy.simulate.ann import ann_forward
from na_deploy.convert import convert_checkpoint
from na_deploy.convert.neuron_modes import convert_inference_mode
from na_deploy.data.arrays import load_dataset
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.ir.offset_calibration import steps_per_inference

VARIANTS = (("subtract", "subtract", 0), ("negative", "negative", 0), ("accumulate", "accumulate", 0),
            ("subtract+offset rho=2", "subtract", 2), ("subtract+offset rho=4", "subtract", 4))
TS = (1, 2, 4, 8, 16, 32)


def measure(fnet, x, y, mode: str, rho: int, max_t: int) -> dict:
    net_f = convert_inference_mode(fnet, mode, offset_steps=rho)
    net_i = TARGET.to_fixed_point(net_f, max_timesteps=max_t)
    assert TARGET.check_fit(net_i) == []
    ts = [t for t in TS if t >= rho]
    t0 = time.perf_counter()
    fr = simulate_float(net_f, x, ts, labels=y, device="cpu", progress=False)
    t1 = time.perf_counter()
    ref = TARGET.reference_simulate_multi(net_i, x, ts, device="cpu")
    t2 = time.perf_counter()
    n = len(x)
    out = {"float_acc": {}, "int_acc": {}, "float_spikes": {}, "int_spikes": {}, "steps": {},
           "wall_s": {"float": round(t1 - t0, 2), "int": round(t2 - t1, 2)}}
    for t in ts:
        out["float_acc"][t] = 100 * fr.accuracy[t]
        out["int_acc"][t] = 100 * float(np.mean(ref[t].predictions == y))
        out["float_spikes"][t] = fr.spikes_per_inference(t)
        out["int_spikes"][t] = sum(int(c.sum()) for c in ref[t].events().values()) / n
        out["steps"][t] = steps_per_inference(net_i, t)
    return out


def _row(label: str, what: str, vals: dict, fmt: str) -> str:
    cells = [(fmt.format(vals[t]) if t in vals else "-").rjust(7) for t in TS]
    return f"{label:<24} {what:<14}" + "".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="runs/zero/qat.ckpt")
    ap.add_argument("--max-timesteps", type=int, default=32)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    fnet = convert_checkpoint(a.ckpt)
    ds = load_dataset(None, seed=0)
    x, y = ds.x_test, ds.y_test
    logits, _ = ann_forward(fnet, x, device="cpu", keep_levels=False)
    ann = 100 * float(np.mean(logits.argmax(1).numpy() == y))
    print(f"{fnet.meta.get('model')} p={fnet.meta.get('p')} noise_adaptor={fnet.meta.get('noise_adaptor')} "
          f"on {ds.name}: {len(x)} test images; quantized ANN {ann:.2f} %")
    print(f"{'variant':<24} {'':<14}" + "".join(f"T={t}".rjust(7) for t in TS))
    res = {"ann_acc": ann, "checkpoint": a.ckpt, "samples": int(len(x)), "variants": {}}
    for label, mode, rho in VARIANTS:
        r = measure(fnet, x, y, mode, rho, a.max_timesteps)
        res["variants"][label] = r
        print(_row(label, "float acc %", r["float_acc"], "{:.2f}"))
        print(_row("", "int acc %", r["int_acc"], "{:.2f}"))
        print(_row("", "float spikes", r["float_spikes"], "{:.0f}"))
        print(_row("", "int spikes", r["int_spikes"], "{:.0f}"))
        print(_row("", "steps", r["steps"], "{:d}"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
