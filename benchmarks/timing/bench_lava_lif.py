"""Backend "lava-lif" (stock LIF, mode "zero"): the full random-net property run and seconds per sample.

    python benchmarks/timing/bench_lava_lif.py [--nets 200] [--samples 20] [--timesteps 8]

1. `--nets` random zero-mode IntNets (the generator and seeds of tests/test_lava_lif.py's property test, which
   runs fewer by default: NA_DEPLOY_LAVA_LIF_NETS): nets failing the fit check are skipped and counted; every
   other one must equal `reference_slow` on every node and sample (asserted).
2. Seconds per sample on the digits-sized conv net of bench_lava.py in mode "zero", backend "lava-lif" vs the
   same net in mode "subtract" on backend "lava" (both asserted bit-exact against the reference).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import numpy as np


def property_run(nets: int) -> None:
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
    from na_deploy.ir import ZERO, replace_nodes
    from na_deploy.testing import TOPOLOGIES, random_inputs, random_intnet
    from na_deploy.verify.bit_exact import first_difference

    backend = TARGET.backend("lava-lif")
    per = math.ceil(nets / len(TOPOLOGIES))
    ran = skipped = 0
    t0 = time.perf_counter()
    for ti, topology in enumerate(TOPOLOGIES):
        for i in range(per):
            rng = np.random.default_rng(1000 * ti + i)
            base = random_intnet(rng, topology, size=3, dense_exponents=(-3, -1, 0, 2) if i % 2 else (0,))
            net = replace_nodes(base, [replace(n, neuron=ZERO) for n in base.nodes])
            x = random_inputs(rng, net, 2)
            T = int(rng.integers(2, 5))
            if TARGET.check_fit(net, T):
                skipped += 1
                continue
            hw = backend.run(net, x, T)
            diff = first_difference(slow_reference_simulate(net, x, T), hw)
            assert diff is None, (topology, 1000 * ti + i, T, diff)
            ran += 1
    dt = time.perf_counter() - t0
    print(f"property: {ran} random zero-mode nets equal the reference (every node, 2 samples each), {skipped} "
          f"skipped by the fit check, {dt:.1f} s ({dt / max(ran, 1):.2f} s per net)")


def seconds_per_sample(samples: int, T: int) -> None:
    from bench_lava import digits_conv_net

    from na_deploy.data.arrays import load_dataset
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.ir import ZERO, replace_nodes
    from na_deploy.verify.bit_exact import first_difference

    digits = load_dataset(None).x_test.astype(np.int64)
    sub = digits_conv_net(digits)
    zero = replace_nodes(sub, [replace(n, neuron=ZERO) for n in sub.nodes])
    x = digits[:samples]
    for name, net in (("lava-lif", zero), ("lava", sub)):
        v = TARGET.check_fit(net, T)
        assert not v, v
        t0 = time.perf_counter()
        hw = TARGET.backend(name).run(net, x, T)
        dt = time.perf_counter() - t0
        assert first_difference(TARGET.reference_simulate(net, x, T), hw) is None, name
        spikes = sum(int(c.sum()) for c in hw.spike_counts.values())
        print(f"{name:9s} mode {net.nodes[0].neuron.name:8s}: {samples} samples, T={T}: {dt:.2f} s total, "
              f"{hw.extra['seconds_run'] / samples:.3f} s per sample (run), spikes {spikes}, bit-exact")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", type=int, default=200)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--timesteps", type=int, default=8)
    args = ap.parse_args()
    if args.samples:
        seconds_per_sample(args.samples, args.timesteps)
    if args.nets:
        property_run(args.nets)


if __name__ == "__main__":
    main()
