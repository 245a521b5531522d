"""Datta et al.'s BN-bias shift (`convert --bn-bias-shift T`) against the pre-charge th/2, on one QAT checkpoint:
integer-SNN accuracy (Loihi 2 reference) vs T for the pre-charged net and for the net shifted for each T.

    .venv/bin/python benchmarks/experiments/measure_bias_shift.py runs/zero/qat.ckpt [--data file.npz]
"""
from __future__ import annotations

import argparse

from na_deploy.convert import convert_checkpoint
from na_deploy.data.arrays import load_dataset
from na_deploy.hw_targets.loihi2 import TARGET

TS = (1, 2, 4, 8, 16, 32)


def row(ckpt, ds, shift):
    fnet = convert_checkpoint(ckpt, bias_shift_timesteps=shift)
    inet = TARGET.to_fixed_point(fnet, max_timesteps=max(TS))
    traces = TARGET.reference_simulate_multi(inet, ds.x_test, TS)
    return [100 * float((traces[T].predictions == ds.y_test).mean()) for T in TS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    ds = load_dataset(args.data)
    print(f"{args.checkpoint}: integer SNN accuracy (%) on {len(ds.y_test)} test images")
    print(f"{'conversion':34s}" + "".join(f"{'T=' + str(T):>8s}" for T in TS))
    print(f"{'pre-charge th/2 (the paper)':34s}" + "".join(f"{a:8.2f}" for a in row(args.checkpoint, ds, None)))
    for shift in (1, 2, 4, 8):
        label = f"bias shift th/(2T) for T={shift}"
        print(f"{label:34s}" + "".join(f"{a:8.2f}" for a in row(args.checkpoint, ds, shift)))


if __name__ == "__main__":
    main()
