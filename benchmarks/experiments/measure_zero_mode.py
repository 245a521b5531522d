"""Accuracy vs T of the reset-to-zero conversion (mode "zero") for candidate parameters.

    .venv/bin/na-deploy pipeline --out /tmp/zero_run --verify-samples 0 --compare-no-noise-adaptor
    .venv/bin/python benchmarks/experiments/measure_zero_mode.py /tmp/zero_run [--integer-top 6] [--split train]
        [--arm net_no_na.float.nad.h5] [--alphas 1,0.8,0.7] [--pc-th 0,0.3,0.5] [--betas 0,0.1]

Loads the run's subtract FloatNets (noise-adaptor arm: net.float.nad.h5; without: net_no_na.float.nad.h5),
applies `apply_neuron_mode(net, "zero", params)` for every candidate (alpha x pre-charge x bias shift), and
prints the float SNN accuracy at T = 1, 2, 4, 8, 16, 32 on the digits test split, the mean over T, and the
integer SNN (Loihi 2 fixed point of every node for T <= 32, without the fit check, + the bit-exact reference)
for the best `--integer-top` candidates and the default. Subtract mode is printed first as the baseline. The
table and the choice are in the docstring of `na_deploy.convert.neuron_modes`.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from na_deploy.convert.neuron_modes import DEFAULT_ZERO, ZeroParams, apply_neuron_mode
from na_deploy.data.arrays import load_dataset
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.io import load_net
from na_deploy.hw_targets.loihi2.fixed_point import quantize_node
from na_deploy.ir import IntNet
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate_multi

TS = [1, 2, 4, 8, 16, 32]
ALPHAS = [1.0, 0.9, 0.8, 0.75, 0.7, 0.6, 0.5]
PRECHARGES = [(0.0, 0.0), (0.5, 0.0), (1.0, -0.5)]  # 0, th/2, th - s/2
BETAS = [0.0, 0.25, 0.5]


def float_acc(net, x, y) -> list[float]:
    res = simulate_float(net, x, TS, labels=y, progress=False, device="cpu")
    return [100 * float(res.accuracy[t]) for t in TS]


def int_net(net, T: int = max(TS)) -> IntNet:
    """Loihi 2 fixed point of every node (`quantize_node`, the rules of `to_fixed_point`) without the fit
    check: the integer SNN's semantics, whatever the chip's stock-LIF register rules say about the net."""
    nodes = [quantize_node(n, net, T)[0] for n in net.all_nodes()]
    return IntNet(input=net.input, nodes=nodes[:-1], readout=nodes[-1],
                  meta={**net.meta, "target": "loihi2", "max_timesteps": T})


def int_acc(net, x, y) -> list[float]:
    traces = reference_simulate_multi(int_net(net), x, TS, device="cpu")
    return [100 * float((traces[t].predictions == y).mean()) for t in TS]


def row(label: str, accs: list[float]) -> str:
    return f"{label:<40} " + " ".join(f"{a:6.2f}" for a in accs) + f"  | {np.mean(accs):6.2f}"


def candidates(alphas=ALPHAS, precharges=PRECHARGES, betas=BETAS) -> list[ZeroParams]:
    return [ZeroParams(alpha=a, pc_th=pt, pc_s=ps, beta=b)
            for a, (pt, ps), b in itertools.product(alphas, precharges, betas)]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--arm", default="net.float.nad.h5")
    ap.add_argument("--integer-top", type=int, default=6)
    ap.add_argument("--alphas", type=floats, default=ALPHAS, help="comma-separated threshold scales")
    ap.add_argument("--pc-th", type=floats, default=None, help="pre-charges as fractions of th (pc_s = 0)")
    ap.add_argument("--betas", type=floats, default=BETAS, help="bias shifts in units of s")
    ap.add_argument("--split", choices=("test", "train"), default="test",
                    help="images to measure on (select parameters on train, report them on test)")
    a = ap.parse_args(argv)
    pcs = PRECHARGES if a.pc_th is None else [(v, 0.0) for v in a.pc_th]
    data = load_dataset(None, seed=0)
    x, y = (data.x_test, data.y_test) if a.split == "test" else (data.x_train, data.y_train)
    base = load_net(a.run / a.arm)
    print(f"{a.run / a.arm}: {len(y)} {a.split} images; accuracy % at T = {TS} | mean")
    print(row("subtract float", float_acc(base, x, y)))
    print(row("subtract integer", int_acc(base, x, y)))
    scored = []
    for prm in candidates(a.alphas, pcs, a.betas):
        accs = float_acc(apply_neuron_mode(base, "zero", prm), x, y)
        scored.append((np.mean(accs), accs[0] + accs[1], prm))
        print(row("zero float " + prm.label(), accs), flush=True)
    scored.sort(key=lambda t: (-t[0], -t[1]))
    top = [p for _, _, p in scored[:a.integer_top]]
    if DEFAULT_ZERO not in top:
        top.append(DEFAULT_ZERO)
    print("integer SNN (Loihi 2 fixed point for T <= 32, reference), best float candidates and the default:")
    for prm in top:
        zn = apply_neuron_mode(base, "zero", prm)
        print(row("zero float   " + prm.label(), float_acc(zn, x, y)))
        print(row("zero integer " + prm.label(), int_acc(zn, x, y)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
