"""Measurement (prints, asserts nothing): the integer SNN's prediction agreement with the float SNN and the
quantized ANN (na_deploy.verify.fidelity) on the digits pipeline nets, honest and tampered, at several T.
These numbers justify `na_deploy.verify.fidelity.DEFAULT_MIN_AGREEMENT`.

Make the nets first (about 30 s on 2 cores; the second arm is optional):

    .venv/bin/na-deploy pipeline --out /tmp/fid_run --verify-samples 0 --compare-no-noise-adaptor
    .venv/bin/python benchmarks/experiments/measure_fidelity.py --run /tmp/fid_run [--timesteps 1,2,4,8,16,32]
        [--other-run /tmp/fid_run_s1] [--ridge] [--seed S (the data split of --run's pipeline)]

Arms: every `<name>.nad.h5` in the run folder with its `<name>.float.nad.h5` sibling (net, net_no_na). For the
noise-adaptor arm, each neuron node is tampered in turn as in issue 11 (its synapses' weights negated, its
integer threshold set to 3) and measured again. Data: the test split the pipeline used (embedded digits,
seed 0: 360 images) or --data NPZ. --other-run DIR: DIR's IntNet (another training run, same architecture)
against this run's FloatNet. --ridge: the untrained ridge-readout digits net of tests/test_fidelity.py (honest,
small class margins) and its tampered copy. Takes about 30 s on 2 CPU cores with every arm.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # tests/helpers.py
from helpers import tampered  # noqa: E402


def ridge_nets(seed: int = 0, max_timesteps: int = 32):
    """A digits_cnn that no SGD trained (tests/helpers.py's ridge_digits_cnn, also tests/test_fidelity.py's net):
    random convs, BN statistics and step sizes from the data, the readout fitted by ridge regression. Honest,
    but with small class margins: its SNN is far from its ANN at small T, which is where integer rounding flips
    predictions most."""
    from na_deploy.convert import to_floatnet
    from na_deploy.hw_targets.loihi2 import TARGET
    from helpers import ridge_digits_cnn

    model, d = ridge_digits_cnn(seed, data_seed=seed, grid=50)
    fnet = to_floatnet(model, d.input_shape, d.normalization.channel_scale, name="digits_cnn")
    return fnet, TARGET.to_fixed_point(fnet, max_timesteps=max_timesteps)


def row(label: str, values: list[float]) -> str:
    return f"{label:<44}" + "".join(f"{100 * v:8.2f}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="/tmp/fid_run")
    ap.add_argument("--data", default=None, help="npz the pipeline ran on (default: embedded digits)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timesteps", default="1,2,4,8,16,32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--other-run", default=None,
                    help="a second pipeline run folder (another seed): its IntNet against this run's FloatNet")
    ap.add_argument("--ridge", action="store_true", help="also the untrained ridge-readout net (small margins)")
    args = ap.parse_args()

    from na_deploy.data.arrays import load_dataset
    from na_deploy.verify.fidelity import DEFAULT_MIN_AGREEMENT
    from na_deploy.io import load_net

    run = Path(args.run)
    ts = [int(t) for t in args.timesteps.split(",")]
    d = load_dataset(args.data, seed=args.seed)
    x, y = d.x_test, d.y_test
    print(f"data {d.name}: {len(y)} test images; run folder {run}; DEFAULT_MIN_AGREEMENT = {DEFAULT_MIN_AGREEMENT}")
    print(row("integer SNN vs ... (%)      T =", []) + "".join(f"{t:8d}" for t in ts))
    t0 = time.perf_counter()
    for ipath in sorted(run.glob("*.nad.h5")):
        if ipath.name.endswith(".float.nad.h5"):
            continue
        fpath = ipath.with_name(ipath.name.replace(".nad.h5", ".float.nad.h5"))
        fnet, inet = load_net(fpath), load_net(ipath)
        arms = [(ipath.stem.replace(".nad", ""), inet)]
        if ipath.name == "net.nad.h5":
            arms += [(f"{ipath.stem.replace('.nad', '')}, tampered {n.name}", tampered(inet, n.name))
                     for n in inet.nodes]
        if ipath.name == "net.nad.h5" and args.other_run:
            arms.append((f"IntNet of {args.other_run}", load_net(Path(args.other_run) / "net.nad.h5")))
        measure(arms, fnet, x, y, ts, args.device)
    if args.ridge:
        fnet, inet = ridge_nets(args.seed, max(ts))
        measure([("ridge-readout net (no SGD)", inet), ("ridge-readout net, tampered features.5",
                                                        tampered(inet, "features.5"))], fnet, x, y, ts, args.device)
    print(f"({time.perf_counter() - t0:.1f} s)")


def measure(arms, fnet, x, y, ts, device) -> None:
    """Print agreement rows (and per-node differences at T=8) for each (label, IntNet) against `fnet`."""
    from na_deploy.verify.fidelity import fidelity
    from na_deploy.hw_targets.loihi2 import TARGET

    for label, net in arms:
        reps = [fidelity(fnet, net, TARGET, x, t, labels=y, device=device) for t in ts]
        print(row(f"{label}: float SNN", [r.agreement_float_snn for r in reps]))
        print(row(f"{label}: quantized ANN", [r.agreement_ann for r in reps]))
        print(row(f"{label}: accuracy (integer SNN)", [r.accuracy["integer_snn"] for r in reps]))
        print(row(f"{label}: accuracy (float SNN)", [r.accuracy["float_snn"] for r in reps]))
        r8 = reps[ts.index(8)] if 8 in ts else reps[-1]
        print(f"    T={r8.timesteps} per node, share of neurons differing / mean |count difference|: " + ", ".join(
            f"{L['node']} {100 * L['share_differing']:.2f}% / {L['mean_abs_count_difference']:.3f}"
            for L in r8.layers))
        fails = r8.failures()
        print(f"    failures at T={r8.timesteps}: {fails[0] if fails else 'none'}")

if __name__ == "__main__":
    main()
