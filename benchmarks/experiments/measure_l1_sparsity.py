"""Datta et al.'s L1 activation regularizer (`quantize --l1-sparsity λ`), measured: from one full-precision
checkpoint and seed, QAT (noise adaptor, p = 2) for each λ, then conversion, Loihi 2 fixed point and the
reference simulator on the test split: spikes per inference and integer-SNN accuracy vs T.

    .venv/bin/python benchmarks/experiments/measure_l1_sparsity.py [--lambdas 0,0.5,2,8] [--data file.npz]
        [--model digits_cnn]
"""
from __future__ import annotations

import argparse

import numpy as np

from na_deploy.convert import to_floatnet
from na_deploy.data.arrays import load_dataset
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.training.loop import train_full_precision, train_qat

TS = (1, 2, 4, 8, 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lambdas", default="0,0.5,2,8")
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default="digits_cnn")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds = load_dataset(args.data, seed=args.seed)
    fp = train_full_precision(ds, args.model, seed=args.seed, progress=False).checkpoint
    print(f"{args.model} on {ds.name}: {len(ds.y_test)} test images; fp test accuracy {fp.history[-1]['test_acc']:.4f}")
    t_columns = "".join(f"{'T=' + str(T):>8s}" for T in TS)
    print(f"{'lambda':>7s} {'ANN':>7s}" + t_columns + f"  {'spikes/inference at T=8':>24s}")
    for lam in (float(v) for v in args.lambdas.split(",")):
        res = train_qat(ds, fp, seed=args.seed, progress=False, l1_sparsity=lam)
        fnet = to_floatnet(res.model, ds.input_shape, fp.normalization.channel_scale, name=args.model)
        inet = TARGET.to_fixed_point(fnet, max_timesteps=max(TS))
        traces = TARGET.reference_simulate_multi(inet, ds.x_test, TS)
        acc = [100 * float((traces[T].predictions == ds.y_test).mean()) for T in TS]
        spikes = float(np.mean(sum(c.reshape(len(c), -1).sum(axis=1) for c in traces[8].spike_counts.values())))
        print(f"{lam:7g} {100 * res.history[-1]['test_acc']:7.2f}" + "".join(f"{a:8.2f}" for a in acc)
              + f"  {spikes:24.1f}")


if __name__ == "__main__":
    main()
