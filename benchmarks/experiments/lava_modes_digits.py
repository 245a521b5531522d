"""Lava == reference on a whole net for the neuron modes `negative`, `accumulate` and for two-stage offset
calibration (`subtract` with offset_steps rho): `na_deploy.verify.bit_exact.verify` (every node's spike counts and the
readout of every sample) plus equality of the event counts, and Lava seconds per sample.

    .venv/bin/python benchmarks/experiments/lava_modes_digits.py runs/ci_demo/qat.ckpt [--samples 100] [--timesteps 8]
        [--rho 2] [--max-timesteps 32] [--modes negative,accumulate,offset,subtract] [--data file.npz]

The QAT checkpoint is converted once per mode (`convert_checkpoint(ckpt, neuron=mode)`, then
`TARGET.to_fixed_point(max_timesteps=...)`). Where the converter does not know a mode yet the script converts as
"subtract" and sets the node's neuron model itself: the spec's conversion of both new modes *is* subtract's
(th = p*s, pre-charge floor(th/2)), so the integer net is the same. Offset calibration sets the IntNet's
meta offset_steps = rho (what `convert --offset-steps` stores).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from na_deploy.convert import convert_checkpoint
from na_deploy.data.arrays import load_dataset
from na_deploy.errors import NaDeployError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.ir import neuron_model
from na_deploy.verify.bit_exact import verify


def int_net(ckpt: str, mode: str, rho: int, max_t: int):
    """(IntNet of the checkpoint in `mode` ("offset": subtract with meta offset_steps rho), how it was made)."""
    neuron = "subtract" if mode == "offset" else mode
    how = f"convert_checkpoint(neuron={neuron!r})"
    try:
        fnet = convert_checkpoint(ckpt, neuron=neuron)
    except NaDeployError:
        fnet = convert_checkpoint(ckpt, neuron="subtract")
        for n in fnet.nodes:
            n.neuron = neuron_model(neuron)
        how = f"convert_checkpoint(neuron='subtract') + node.neuron = {neuron!r}"
    inet = TARGET.to_fixed_point(fnet, max_timesteps=max_t)
    if any(n.neuron.name != neuron for n in inet.nodes):
        for n in inet.nodes:
            n.neuron = neuron_model(neuron)
    if mode == "offset":
        inet.meta["offset_steps"] = int(rho)
        inet.validate()
        how += f" + meta offset_steps = {rho}"
    return inet, how


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--rho", type=int, default=2)
    ap.add_argument("--max-timesteps", type=int, default=32)
    ap.add_argument("--modes", default="negative,accumulate,offset")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    x, y = ds.x_test[:args.samples], ds.y_test[:args.samples]
    T = args.timesteps
    backend = TARGET.backend()
    print(f"{args.checkpoint}: {len(x)} test images, T = {T}, Lava backend {backend.label}")
    print(f"{'mode':12s} {'samples':>7s} {'equal':>6s} {'events eq':>9s} {'acc %':>6s} {'spikes':>9s} "
          f"{'events':>9s} {'slot':>5s} {'Lava s/sample':>13s}  made by")
    for mode in args.modes.split(","):
        inet, how = int_net(args.checkpoint, mode, args.rho, args.max_timesteps)
        seen = {}
        t0 = time.perf_counter()
        rep = verify(inet, x, T, TARGET, backend, on_build=lambda g: seen.update(slot=g.slot))
        wall = time.perf_counter() - t0
        ref = TARGET.reference_simulate(inet, x, T)
        hw = backend.run(inet, x[:10], T)  # a second, short run: event counts of Lava vs the reference's
        ref10 = TARGET.reference_simulate(inet, x[:10], T)
        ev_eq = all(np.array_equal(ref10.events()[k], hw.events()[k]) for k in ref10.spike_counts)
        spikes = sum(int(v.sum()) for v in ref.spike_counts.values()) / len(x)
        events = sum(int(v.sum()) for v in ref.events().values()) / len(x)
        acc = 100 * float((ref.predictions == y).mean())
        d = rep.to_dict()
        per = d["seconds"]["lava_per_sample"]
        print(f"{mode:12s} {d['samples']:7d} {str(d['equal']):>6s} {str(ev_eq):>9s} {acc:6.2f} {spikes:9.1f} "
              f"{events:9.1f} {seen.get('slot', 0):5d} {per:13.3f}  {how} (verify {wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
