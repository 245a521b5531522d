"""Export a mode "zero" IntNet for lava-dl's netx loader (`na-deploy export --format netx`), written atomically:

    OUT/net.netx.h5   the netx file of the net netx runs (`format.write_netx`); root attributes carry T,
                      the Network keyword arguments and `made_from`
    OUT/net.nad.h5    that net as our IntNet (pre-charge folded into the bias; `netx_runnable`): the net
                      `na-deploy verify --backend netx` checks and the reference simulates
    OUT/run_netx.py   loads net.netx.h5 with netx.hdf5.Network and classifies images (Lava + lava-dl only)
    OUT/README.txt, OUT/manifest.json (blocks, Network kwargs, what changed, sha256 of every file, made_from)

Refused, with one line naming the node: what netx cannot express (a residual add, a relay, a pool not folded,
a mode other than "zero"), a net failing the Loihi 2 fit check for T, and what netx would not run exactly
(the backend's `check_netx`: bias beyond 13 bits, a readout that could fire or saturate within T, dense
weights the reader would change). The folder rule, the templates and the atomic write are the target's shared
bundle helpers (hw_targets/loihi2/bundle.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from na_deploy.checks import check_timestep
from na_deploy.io import save_net
from na_deploy.ir import IntNet
from na_deploy.protocols import require_fit
from na_deploy.io.made_from import NET_SUFFIX, sha256_file

from na_deploy.hw_targets.loihi2.bundle import check_out_dir, read_template, written_atomically
from na_deploy.hw_targets.loihi2.netx.format import (INPUT_MESSAGE_BITS, NETX_FORMAT, NETX_FORMAT_VERSION,
                                                     PRECHARGE_NOTE, netx_layers, netx_runnable, netx_schedule,
                                                     write_netx)

NETX_FILE = "net.netx.h5"
NET_FILE = "net.nad.h5"


def _manifest(net: IntNet, ran: IntNet, T: int, made_from: dict, folder: Path, label: str) -> dict:
    depth = ran.depths()
    return {"format": NETX_FORMAT, "version": NETX_FORMAT_VERSION, "backend": label, "netx_file": NETX_FILE,
            "net": NET_FILE, "timesteps": T, "network_kwargs": netx_schedule(ran, T),
            "readout": {"node": ran.readout.name, "rule": "v of the last block after step (k+1)*reset_interval "
                                                          "= 64 x readout potential of sample k; class = argmax"},
            "changed": PRECHARGE_NOTE if ran is not net else None,
            "precharge_was": {n.name: int(n.precharge) for n in net.nodes} if ran is not net else None,
            "made_from": made_from,
            "sha256": {name: sha256_file(folder / name) for name in (NETX_FILE, NET_FILE)},
            "blocks": [{"name": n.name, "op": n.inputs[0].op.kind, "shape": list(n.shape), "depth": depth[n.name]}
                       for n in netx_layers(ran)]}


def _write(folder: Path, net: IntNet, ran: IntNet, T: int, source: str, limits, label: str) -> None:
    save_net(net, folder / "source.nad.h5")  # byte-deterministic: the sha256 of the file it was loaded from
    name = Path(source).name if source.endswith(NET_SUFFIX) else "an IntNet"
    made_from = {"kind": "int_net", "file": name, "sha256": sha256_file(folder / "source.nad.h5")}
    (folder / "source.nad.h5").unlink()
    save_net(ran, folder / NET_FILE)
    write_netx(ran, folder / NETX_FILE, T, limits, made_from=made_from)
    shape = ", ".join(map(str, ran.input.shape))
    (folder / "run_netx.py").write_text(read_template(__package__, "run_netx.py.tmpl").format(
        shape=shape, timesteps=T, netx_file=NETX_FILE))
    title = f"na-deploy netx export of {source or 'an IntNet'}"
    sched = netx_schedule(ran, T)
    (folder / "README.txt").write_text(read_template(__package__, "README_netx.txt.tmpl").format(
        source=source or "an IntNet", rule="=" * len(title), netx_file=NETX_FILE, net_file=NET_FILE,
        bits=INPUT_MESSAGE_BITS, interval=sched["reset_interval"], offset=sched["reset_offset"], timesteps=T,
        changed=PRECHARGE_NOTE if ran is not net else "nothing (the net has no pre-charge)"))
    (folder / "manifest.json").write_text(json.dumps(_manifest(net, ran, T, made_from, folder, label), indent=2) + "\n")


def export_netx_bundle(net: IntNet, out_dir, target, *, timesteps: int = 8, force: bool = False, source: str = "",
                       check: Callable[[IntNet, int, Any], None], label: str) -> Path:
    """Write OUT_DIR (module doc) atomically; refuses, naming the node, what netx cannot run exactly.
    check(net, T, limits): the backend's exactness check (`backend.check_netx`); label: its label."""
    out = Path(out_dir)
    check_out_dir(out, force)
    T = check_timestep(timesteps)
    ran = netx_runnable(net, T)
    require_fit(target, ran, T, suffix="; nothing exported")
    check(ran, T, target.limits)
    with written_atomically(out) as tmp:
        _write(tmp, net, ran, T, source, target.limits, label)
    return out


__all__ = ["export_netx_bundle", "NETX_FILE", "NET_FILE"]
