"""What the netx export costs in accuracy: a mode "zero" IntNet simulated by the reference as is, with its
pre-charge folded into the bias for each T (what `export --format netx` writes: `netx_runnable`), and with the
pre-charge dropped; and up to which T netx can run it (its readout LIF must never fire: `netx_rules`).

    .venv/bin/python benchmarks/experiments/measure_netx_precharge.py runs/zero/net.nad.h5 [--data file.npz]

Prints one row per variant: integer SNN accuracy (%) at T = 1 2 4 8 16 32 on the test split.
"""
from __future__ import annotations

import argparse
import dataclasses

from na_deploy.data.arrays import load_dataset
from na_deploy.hw_targets.loihi2.netx.format import netx_rules, netx_runnable
from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate
from na_deploy.io import load_intnet
from na_deploy.ir.graph import replace_nodes

TS = (1, 2, 4, 8, 16, 32)


def accuracy(net, x, y, T: int) -> float:
    return 100.0 * float((reference_simulate(net, x, T).predictions == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("net")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    net = load_intnet(args.net)
    ds = load_dataset(args.data)
    x, y = ds.x_test, ds.y_test
    dropped = replace_nodes(net, [dataclasses.replace(n, precharge=0) for n in net.nodes])
    rows = {"as converted (pre-charge kept)": [accuracy(net, x, y, T) for T in TS],
            "pre-charge folded into the bias for T (netx)": [accuracy(netx_runnable(net, T), x, y, T) for T in TS],
            "pre-charge dropped": [accuracy(dropped, x, y, T) for T in TS]}
    print(f"{args.net}: integer SNN accuracy (%) on {len(y)} test images")
    print(f"{'variant':48s}" + "".join(f"{'T=' + str(T):>8s}" for T in TS))
    for name, accs in rows.items():
        print(f"{name:48s}" + "".join(f"{a:8.2f}" for a in accs))
    ok = [T for T in range(1, 65) if not netx_rules(netx_runnable(net, T), T)]
    print(f"netx can run the folded net for T in 1..{max(ok)}" if ok and ok == list(range(1, max(ok) + 1))
          else f"netx can run the folded net for T in {ok}")


if __name__ == "__main__":
    main()
