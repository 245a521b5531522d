"""Lava seconds per sample vs reference seconds per sample (prints only).

    python benchmarks/timing/bench_lava.py [--net NET.nad.h5] [--samples 100] [--timesteps 8] [--rebuild-samples 3]

Default net: a digits-sized conv IntNet built here (1x8x8 input, conv 8 -> conv 16 stride 2 -> conv 16 ->
dense 10 readout, random weights within the Loihi 2 limits, thresholds calibrated so that neurons fire at
moderate rates); --net runs a converted net instead (e.g. digits_cnn from `na-deploy convert`). Inputs: the
first N test images of the embedded digits (or random pixels when the net's input is not 1x8x8).
Measured: fast reference; Lava with all N samples in one runtime (the backend's choice), the same in one
`run` call per sample, and Lava rebuilt per sample; bit-exactness of every Lava result is asserted.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from na_deploy.ir import INPUT_NAME, Conv2d, Dense, InputNode, IntNet, IntNeuronNode, IntReadoutNode, Synapse
from na_deploy.verify.bit_exact import first_difference


def _calibrated_threshold(currents: np.ndarray, rate: float = 0.3) -> int:
    """An integer threshold near the (1 - rate) quantile of the positive per-step currents."""
    pos = currents[currents > 0]
    return int(max(1, np.quantile(pos, 1 - rate))) if pos.size else 1


def digits_conv_net(x: np.ndarray, seed: int = 0) -> IntNet:
    """Digits-sized conv IntNet: conv(1->8) -> conv(8->16, stride 2) -> conv(16->16) -> dense(256->10)."""
    from na_deploy.hw_targets.loihi2.reference.slow import int_op

    rng = np.random.default_rng(seed)
    specs = [("conv1", 8, 1, 3), ("conv2", 16, 2, 127), ("conv3", 16, 1, 127)]
    nodes, src, shape, payload = [], INPUT_NAME, (1, 8, 8), x[:16].astype(np.int64)
    for name, cout, stride, wmax in specs:
        op = Conv2d(rng.integers(-wmax, wmax + 1, size=(cout, shape[0], 3, 3)), stride, 1)
        cur = np.stack([int_op(op, p) for p in payload])
        th = _calibrated_threshold(cur)
        out_shape = op.out_shape(shape)
        nodes.append(IntNeuronNode(name, out_shape, [Synapse(src, op)], threshold=th, precharge=th // 2,
                                   bias_mant=rng.integers(-th // 8 - 1, th // 8 + 1, size=cout)))
        src, shape = name, out_shape
        payload = (cur > th // 2).astype(np.int64)  # a plausible spike pattern for the next calibration
    ro = IntReadoutNode("readout", (10,), [Synapse(src, Dense(rng.integers(-127, 128, (10, int(np.prod(shape)))) * 2))])
    return IntNet(InputNode((1, 8, 8)), nodes, ro, meta={"target": "loihi2", "generator": "bench_lava"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default=None)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--rebuild-samples", type=int, default=3)
    args = ap.parse_args()

    from na_deploy.data.arrays import load_dataset
    from na_deploy.hw_targets.loihi2 import TARGET

    backend = TARGET.backend()

    T, N = args.timesteps, args.samples
    digits = load_dataset(None).x_test.astype(np.int64)
    if args.net:
        from na_deploy.io import load_net

        net = load_net(args.net)
    else:
        net = digits_conv_net(digits)
    x = digits[:N] if tuple(net.input.shape) == (1, 8, 8) else \
        np.random.default_rng(0).integers(0, 256, size=(N, *net.input.shape))
    v = TARGET.check_fit(net, timesteps=T)
    assert not v, v
    print(f"net: {args.net or 'synthetic digits conv'}; nodes {[n.name for n in net.all_nodes()]}; "
          f"shapes {[n.shape for n in net.all_nodes()]}; T={T}; N={N}; readout depth {net.depths()[net.readout.name]}")

    TARGET.reference_simulate(net, x[:2], T)  # warm-up (torch kernels)
    t0 = time.perf_counter()
    ref = TARGET.reference_simulate(net, x, T)
    t_ref = (time.perf_counter() - t0) / N
    print(f"reference (fast):               {t_ref * 1e3:9.3f} ms/sample")
    print("spikes per node:", {k: int(c.sum()) for k, c in ref.spike_counts.items()})

    t0 = time.perf_counter()
    hw = backend.run(net, x, T)
    t_one = (time.perf_counter() - t0) / N
    assert first_difference(ref, hw) is None, first_difference(ref, hw)
    e = hw.extra
    print(f"Lava, one runtime, {N} samples:  {t_one * 1e3:9.1f} ms/sample  (build {e['seconds_build']:.2f} s, "
          f"compile+run {e['seconds_run']:.2f} s for {e['lava_steps']} steps = "
          f"{e['seconds_run'] / e['lava_steps'] * 1e3:.1f} ms/step, {e['processes']} processes, "
          f"total incl. collect/stop {t_one * N:.2f} s)")

    t0 = time.perf_counter()
    hw1 = backend.run(net, x, T, samples_per_run=1)
    t_chunk = (time.perf_counter() - t0) / N
    assert first_difference(ref, hw1) is None
    print(f"Lava, one runtime, 1 run/sample: {t_chunk * 1e3:9.1f} ms/sample")

    R = max(1, min(args.rebuild_samples, N))
    t0 = time.perf_counter()
    for i in range(R):
        tr = backend.run(net, x[i:i + 1], T)
        assert all(np.array_equal(tr.spike_counts[k][0], ref.spike_counts[k][i]) for k in tr.spike_counts)
    t_rebuild = (time.perf_counter() - t0) / R
    print(f"Lava, rebuilt per sample ({R}):   {t_rebuild * 1e3:9.1f} ms/sample")
    print(f"ratio Lava / reference: {t_one / t_ref:.0f}x (one runtime), {t_rebuild / t_ref:.0f}x (rebuild per "
          f"sample); one runtime is {t_rebuild / t_one:.1f}x faster than rebuilding; all Lava results bit-exact")


if __name__ == "__main__":
    main()
