"""Backend "netx": a mode "zero" IntNet written as a netx file (`format.write_netx`) and run by lava-dl's own
loader, `lava.lib.dl.netx.hdf5.Network`, in Lava (Loihi2SimCfg, tag fixed_pt), i.e. on Lava's stock
bit-accurate LIF (`LIFReset` -> PyLifResetModelBitAcc) built by netx from our file. This is the proof by the real
reader: the file we write, read by the reader Intel ships, equal to our reference.

What is ours around the Network (nothing inside it):
* input: our `GradedSource` sends sample k's raw pixels as graded spikes (8 message bits) on the first T steps of
  its slot of L = T + D steps (`netx_schedule`), zeros otherwise, into `Network.inp`;
* per-sample reset: netx's own (`Network(reset_interval=L, reset_offset=1)`: LIFReset zeroes u and v at each
  block's window start, see format.py);
* spike counts: each block's `out` port feeds one of our `Accumulator`s (bias 0) whose window is the block's
  (depth d: steps d + 1 .. d + T of the slot); they count, they do not feed back. The readout block's counter
  must stay 0 (its LIF never fires: `netx_rules`); a spike there is an error, not a result;
* readout: one `run` call per sample slot, then the host reads the last block's `v` (`Var.get`, 10 values):
  v = 64 x the readout potential of the window that has just ended (C7). With record_steps the readout window is
  run step by step to read v after each step.

Dense weights go through netx's `optimize_weight_bits` and Lava Dense's first-step clip / truncate;
`reader_dense_weights` applies that same reader path (lava-dl's and Lava's own functions) and the backend refuses
a net whose weights it would change, naming the node. Export (`NetxBackend.export`): export.py.
`NetxBackend` is a `lava.frame.LavaBackendFrame`: its `run` is the frame's.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from na_deploy.checks import check_pixels, check_timestep
from na_deploy.errors import FitError, SimulationError
from na_deploy.ir import Dense, IntNet
from na_deploy.protocols import Trace

from na_deploy.hw_targets.loihi2.lava.frame import LavaBackendFrame
from na_deploy.hw_targets.loihi2.lava.graph import LavaGraph
from na_deploy.hw_targets.loihi2.lava.layout import lava_shape, to_lava_layout
from na_deploy.hw_targets.loihi2.lava.runtime import run_sample_by_sample, run_steps_or_raise, var_as_int
from na_deploy.hw_targets.loihi2.limits import Loihi2Limits
from na_deploy.hw_targets.loihi2.netx.format import (INPUT_MESSAGE_BITS, netx_layers, netx_rules, netx_schedule,
                                                     write_netx)

from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights  # noqa: E402

from na_deploy.hw_targets.loihi2.lava.processes.process import Accumulator, GradedSource  # noqa: E402

BACKEND_LABEL = "lava-dl-0.6-netx-hdf5-network/lava-0.10-loihi2simcfg-fixed_pt-stock-lif"
READOUT_SPIKES = "readout:spike_count"  # must stay 0: the readout LIF never fires


def _netx():
    """lava-dl's netx (imports slayer, torchvision, cv2: loaded only when this backend runs)."""
    from lava.lib.dl.netx import hdf5, utils

    return hdf5, utils


def reader_dense_weights(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """(W_eff as int64, ok): what netx + Lava Dense make of a dense weight matrix we write. netx rescales it
    (`optimize_weight_bits`: W' = W << s, weight_exp = -s), Lava clips and truncates W' on the first step, and
    Dense sends (W' x) >> s. ok when W' is exactly W << s (then the sum shifts back exactly)."""
    _, utils = _netx()
    w = np.asarray(weight, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"), contextlib.redirect_stdout(io.StringIO()):
        try:
            w2, nbits, wexp, _ = utils.optimize_weight_bits(w.copy())
        except (ValueError, OverflowError):
            return w, False
    mode = determine_sign_mode(w2)
    kept = truncate_weights(clip_weights(w2, mode, num_bits=8), mode, int(nbits)).astype(np.int64)
    ok = wexp <= 0 and np.array_equal(kept, w << -int(wexp))
    return kept, bool(ok)


def check_netx(net: IntNet, timesteps: int, limits: Loihi2Limits) -> None:
    """FitError (naming node and register) for what netx would not run exactly: netx_layers' structure,
    netx_rules' registers, and dense weights the reader would change."""
    netx_layers(net)
    bad = netx_rules(net, timesteps, limits)
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise FitError("netx cannot run this net exactly: " + "; ".join(str(v) for v in bad[:3]) + more)
    for node in net.all_nodes():
        op = node.inputs[0].op
        if isinstance(op, Dense) and not reader_dense_weights(op.weight)[1]:
            raise FitError(f"node {node.name}: netx's optimize_weight_bits + Lava Dense's clip/truncate would change "
                           f"its dense weights (range [{int(op.weight.min())}, {int(op.weight.max())}]); allowed: "
                           "weights the reader keeps, e.g. even values in [-256, 254] of mixed sign")


@dataclass
class NetxGraph(LavaGraph):
    """A netx `Network` with our input and counters. `readout` is our input process, the one that runs and stops
    the runtime (the hierarchical Network gets no runtime of its own: stopping it would leave Lava's processes
    running); `neurons[name]` are the counters of the neuron blocks; `readout_v` the host's per-sample v reads
    of the last block (the readout itself)."""

    network: Any = None
    readout_counter: Any = None
    netx_file: str = ""
    readout_v: list = field(default_factory=list)
    step_v: list = field(default_factory=list)

    @property
    def processes(self) -> list:
        return [self.source, self.network, *self.neurons.values(), self.readout_counter]

    def _populations(self) -> dict:
        return {**self.neurons, READOUT_SPIKES: self.readout_counter}

    def read_readout(self, into: list) -> None:
        into.append(var_as_int(self.network.layers[-1].neuron.v))

    def _readout(self, vs: list, want: int) -> np.ndarray:
        if len(vs) < want:
            raise SimulationError(f"netx readout: {len(vs)} of {want} samples read; run every sample slot first")
        v = np.stack(vs[-want:])
        if np.any(v % 64):
            raise SimulationError("netx readout: the readout LIF's v is not a multiple of 64 (it saturated)")
        return v // 64

    def collect(self) -> Trace:
        self.drain()
        B, T = self.n_samples, self.timesteps
        counts = {name: self._stacked(name, B, self.net.node(name).shape) for name in self.neurons}
        fired = self._stacked(READOUT_SPIKES, B, self.net.readout.shape)
        if fired.any():
            raise SimulationError(f"netx readout: the readout LIF fired {int(fired.sum())} times (its potential passed "
                                  "vth << 6); the fit check should have refused this T")
        trace = Trace(timesteps=T, spike_counts=counts, readout=self._readout(self.readout_v, B),
                      extra={"backend": BACKEND_LABEL, "netx_file": self.netx_file})
        if self.record_steps:
            cum = {name: self._stacked((name, "trace"), T, self.net.node(name).shape) for name in self.neurons}
            trace.step_spikes = {k: np.diff(v, axis=0, prepend=np.zeros_like(v[:1])) for k, v in cum.items()}
            trace.step_readout = self._readout(self.step_v, T)
        return trace


def build_netx_graph(net: IntNet, netx_file: str | Path, timesteps: int, inputs: np.ndarray,
                     record_steps: bool = False, result_buffer: Optional[int] = None) -> NetxGraph:
    """Load `netx_file` with netx.hdf5.Network and wire our input and counters to it (not compiled)."""
    hdf5, _ = _netx()
    T = check_timestep(timesteps)
    x = check_pixels(inputs, net.input.shape)
    B, buf = x.shape[0], int(result_buffer or x.shape[0])
    sched, depth, nodes = netx_schedule(net, T), net.depths(), netx_layers(net)
    network = hdf5.Network(net_config=str(netx_file), **sched)
    network.net_config.f.close()  # netx keeps its h5py handle open after building
    if len(network.layers) != len(nodes):
        raise SimulationError(f"netx built {len(network.layers)} blocks from {netx_file}; the net has {len(nodes)}")
    slot = sched["reset_interval"]
    # conv first block: Lava's (W, H, C); dense first block: the C-order flatten of the IR's (C, H, W)
    data = (to_lava_layout(x, net.input.shape) if len(network.inp.shape) == 3 else x.reshape(B, -1))
    data = data.reshape((B, *network.inp.shape))
    source = GradedSource(data=data, timesteps=T, slot=slot, num_message_bits=INPUT_MESSAGE_BITS, name="input")
    source.s_out.connect(network.inp)
    win = dict(timesteps=T, slot=slot, n_samples=B, record_steps=record_steps, result_buffer=buf)
    counters = {}
    for node, block in zip(nodes, network.layers):
        shape = tuple(block.out.shape)
        if shape != lava_shape(node.shape):
            raise SimulationError(f"netx block of node {node.name} has shape {shape}, the node "
                                  f"{lava_shape(node.shape)}")
        counter = Accumulator(shape=shape, bias=np.zeros(shape, dtype=np.int64), depth=depth[node.name],
                              name=f"{node.name}:spike_count", **win)
        block.out.connect(counter.a_in)
        counters[node.name] = counter
    readout_counter = counters.pop(net.readout.name)
    return NetxGraph(net=net, timesteps=T, n_samples=B, slot=slot, source=source, neurons=counters, readout=source,
                     record_steps=record_steps, result_buffer=buf, network=network, readout_counter=readout_counter,
                     netx_file=str(netx_file))


def _run_sample(graph: NetxGraph, cfg, timeout_s: Optional[float], last: bool) -> None:
    """One sample slot; v read at its end (and after every readout window step of the last one, record_steps)."""
    if graph.record_steps and last:
        start = graph.slot - graph.timesteps
        run_steps_or_raise(graph.source, start, cfg, timeout_s)
        for _ in range(graph.timesteps):
            run_steps_or_raise(graph.source, 1, cfg, timeout_s)
            graph.read_readout(graph.step_v)
        graph.readout_v.append(graph.step_v[-1])
        return
    run_steps_or_raise(graph.source, graph.slot, cfg, timeout_s)
    graph.read_readout(graph.readout_v)


def run_netx_graph(graph: NetxGraph, timeout_s: Optional[float] = None, progress: bool = False) -> Trace:
    """Compile and run `graph` sample slot by sample slot, collect, tear down."""
    last = graph.n_samples - 1
    trace = run_sample_by_sample(graph, lambda k, cfg: _run_sample(graph, cfg, timeout_s, last=k == last), "netx",
                                 progress)
    trace.extra["lif_models"] = sorted({type(b.neuron).__name__ for b in graph.network.layers})
    return trace


class NetxBackend(LavaBackendFrame):
    """Mode "zero" chain IntNets through lava-dl's netx loader on Lava 0.10's stock bit-accurate LIF. Hooks: it
    refuses what netx would not run exactly (`check_netx`), writes the net as a netx file and loads it
    (`build_netx_graph`), runs sample by sample (`run_netx_graph`), and exports the netx bundle."""

    name = "netx"
    label = BACKEND_LABEL
    who = "backend netx"
    runs_on = "netx"

    def refuse(self, net: IntNet, timesteps: int) -> None:
        check_netx(net, timesteps, self.limits)

    def build(self, net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None, *,
              netx_file: Optional[str] = None, **kw: Any) -> NetxGraph:
        """The graph of `net` loaded by netx from `netx_file` (default: written to a temporary folder)."""
        T = check_timestep(timesteps)
        check_netx(net, T, self.limits)
        x = inputs if inputs is not None else np.zeros((1, *net.input.shape), dtype=np.int64)
        if netx_file is None:
            netx_file = write_netx(net, Path(tempfile.mkdtemp(prefix="na-deploy-netx-")) / "net.netx.h5", T,
                                   self.limits)
        return build_netx_graph(net, netx_file, T, x, **kw)

    @contextlib.contextmanager
    def graph_for_run(self, net: IntNet, timesteps: int, inputs: np.ndarray, *, netx_file: Optional[str] = None,
                      **kw: Any) -> Iterator[NetxGraph]:
        """`net` written as a netx file in a temporary folder that lives as long as the run (or `netx_file`),
        loaded with netx.hdf5.Network."""
        with tempfile.TemporaryDirectory(prefix="na-deploy-netx-") as tmp:
            path = netx_file or write_netx(net, Path(tmp) / "net.netx.h5", timesteps, self.limits)
            yield build_netx_graph(net, path, timesteps, inputs, **kw)

    def run_built(self, graph: NetxGraph, samples_per_run: int, timeout_s: Optional[float], progress: bool) -> Trace:
        """Sample slot by sample slot, the readout's v read after each (`run_netx_graph`)."""
        return run_netx_graph(graph, timeout_s=timeout_s, progress=progress)

    def export(self, net: IntNet, out_dir: str | Path, *, timesteps: int = 8, force: bool = False,
               source: str = "") -> Path:
        """The netx bundle (export.export_netx_bundle): the netx file, the IntNet it runs, a script, a
        manifest. The pre-charge netx cannot carry is set to 0 there, and the manifest says so."""
        from na_deploy.hw_targets.loihi2.netx.export import export_netx_bundle

        return export_netx_bundle(net, out_dir, self.target, timesteps=timesteps, force=force, source=source,
                                  check=check_netx, label=self.label)


__all__ = ["NetxBackend", "NetxGraph", "build_netx_graph", "run_netx_graph", "check_netx", "reader_dense_weights",
           "BACKEND_LABEL"]
