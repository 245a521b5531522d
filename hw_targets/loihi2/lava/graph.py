"""IntNet -> Lava process graph (Loihi2SimCfg, `fixed_pt`), not compiled (docs/contract.md: Lava facts; contract C2-C6).

* one `SubtractiveIF` per neuron node (its neuron model passed by name, `neuron=`), one `Accumulator` for the
  readout, one `GradedSource` for the input (processes/). Every connection process below adds exactly one
  step of delay (C3), and a valid IntNet has all paths balanced (`net.depths()`), so node m sees its
  sources' payloads of one step earlier.
* Dense -> `Dense(weights=W', weight_exp=e)`, W' = `dense_weights_for_lava` (layout.py); Lava computes
  a = W's (graded: W'x; binary: sum of the columns of spiking inputs) then a << e (e >= 0) or
  a >> -e (numpy arithmetic shift = floor, e < 0), exactly the IR's shift(y, e) (`na_deploy.integer.shift`).
* Conv2d -> `ConvFast(weight=conv_weights_for_lava(w))` (processes/conv_fast.py: Lava's `Conv` with a vectorized
  fixed_pt model, the same integers), padding / stride given as (x, y) = (w, h); exponent
  must be 0 (Lava's Conv ignores it). AvgPool2d(k, s, g) -> grouped Conv (groups = C) with kernel g * ones.
* Identity(g) -> `Sparse` diagonal g (weight_exp = e), on flattened ports for maps.
* payloads: graded from the input (num_message_bits = 8: raw pixels 0..255, C4), from signed ("negative")
  populations (num_message_bits = 2: z in {-1, 0, 1}; Lava's graded Dense / Sparse / Conv compute W.s with the
  payload as sent, so a -1 adds -w exactly) and from graded nodes (num_message_bits = 24: the signed input sum,
  contract C2 "Graded nodes"; the same SubtractiveIF process in its "graded" model), binary elsewhere.
* window starts: the IR's rule (`na_deploy.ir.timing.window_starts`): a node starts one step after its sources'
  start, plus T after an "accumulate" source (its spikes leave in its fire phase, T steps late); offset
  calibration (the net's `offset_steps` rho) adds rho steps of stage 1 to every window, the input sends each
  sample for rho + T steps.
* a residual add is several connection processes into one InPort (Lava sums them).
Dense / Sparse weights must be ones Lava's first-step clip/truncate keeps unchanged (`lava_kept_weights`);
the builder refuses anything else rather than let Lava change a weight.

Many samples, one runtime (C3): sample k occupies Lava steps k*L + 1 .. (k+1)*L, L = rho + T + D' (D': the
readout's window start: its depth, plus T per "accumulate" layer on the path; `ir.timing.steps_per_inference`);
every population re-arms at its window start and sends its per-sample result (counts / final potential) to the
host through a Lava external pipe at its window end, so the graph is compiled once for all samples. Pipes, not
Var.get(): Lava's Var.get moves one value per message (~20 us each), a pipe one array per sample.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.sparse as sp

from na_deploy.checks import check_pixels, check_timestep
from na_deploy.errors import FitError, IRError, SimulationError
from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, IntNet, Synapse
from na_deploy.ir.timing import check_offset_fits, check_offset_steps, steps_per_inference
from na_deploy.ir.timing import offset_steps as ir_offset_steps
from na_deploy.ir.timing import window_starts as ir_window_starts
from na_deploy.protocols import Trace

from na_deploy.hw_targets.loihi2.lava.layout import (check_lava_keeps, conv_weights_for_lava, dense_weights_for_lava,
                                                     from_lava_layout, lava_shape, per_neuron, pool_weights_for_lava,
                                                     to_lava_layout)
from na_deploy.hw_targets.loihi2.lava.runtime import let_lava_choose_fork

let_lava_choose_fork()  # before the first Lava process module: Lava sets the start method when it loads

from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense as LavaDense  # noqa: E402
from lava.proc.sparse.process import Sparse  # noqa: E402

from na_deploy.hw_targets.loihi2.lava.processes.process import (  # noqa: E402
    GRADED_MODELS, NEURON_MODELS, OFFSET_MODELS, SIGNED_MODELS, Accumulator, GradedSource, SubtractiveIF)

BACKEND_LABEL = "lava-0.10-loihi2simcfg-fixed_pt"  # what ran, recorded in traces, reports and bundles
GRADED_MESSAGE_BITS = 8  # raw uint8 pixels (C4)
SIGNED_MESSAGE_BITS = 2  # signed spikes z in {-1, 0, 1} (mode "negative")
GRADED_SPIKE_BITS = 24  # a graded node's payload: signed, 24 bits (Loihi 2 graded spikes; limits.graded_spike_bits)
PIXEL_MAX = (1 << GRADED_MESSAGE_BITS) - 1


@dataclass
class LavaGraph:
    """An IntNet as Lava processes (not compiled). `neurons[name]` / `readout` / `source` are the
    populations; `synapses[name]` the connection processes into node `name`, in `node.inputs` order.

    Results leave the populations through Lava external pipes (one array per sample, `result_out`), which
    hold `result_buffer` samples: run at most that many samples per `run` call and `drain()` in between
    (`collect()` drains too). The default buffer holds every sample, so one `run` of `num_steps` works."""

    net: IntNet
    timesteps: int
    n_samples: int
    slot: int
    source: GradedSource
    neurons: dict[str, SubtractiveIF]
    readout: Accumulator
    synapses: dict[str, list] = field(default_factory=dict)
    record_steps: bool = False
    result_buffer: int = 0
    received: dict = field(default_factory=dict)  # population name -> list of arrays from its pipes
    offset_steps: int = 0  # rho: stage 1 of offset calibration, per sample (0: off)
    starts: dict = field(default_factory=dict)  # population name -> window start in its slot

    @property
    def num_steps(self) -> int:
        """Lava steps that run every sample: n_samples * slot (slot = rho + T + the readout's window start)."""
        return self.n_samples * self.slot

    @property
    def processes(self) -> list:
        return [self.source, *self.neurons.values(), self.readout, *(p for ps in self.synapses.values() for p in ps)]

    def _populations(self) -> dict:
        return {**self.neurons, self.net.readout.name: self.readout}

    def drain(self, samples: int = 0, wait_s: float = 60.0) -> None:
        """Move the arrays waiting in the populations' result / trace pipes into `received`.

        After a `run` call of `samples` whole sample slots every population has sent exactly `samples`
        results (and `samples * T` trace records): wait for exactly those. Lava hands a pipe's data to the host
        through a listener thread, so right after `run` returns the last arrays may not be visible yet; a
        drain that only took what `probe()` showed then could leave them in the pipe, and the next run call
        would block on the full pipe (a hang seen under load)."""
        deadline = time.monotonic() + wait_s
        for name, proc in self._populations().items():
            for port, key, per_sample in ((proc.result_out, name, 1), (getattr(proc, "event_out", None),
                                          (name, "events"), 1), (proc.trace_out, (name, "trace"), self.timesteps)):
                recv = getattr(port, "external_pipe_csp_recv_port", None)
                if recv is None:
                    continue
                need = samples * per_sample if (per_sample == 1 or self.record_steps) else 0
                self._receive(recv, self.received.setdefault(key, []), need, name, deadline, wait_s)

    @staticmethod
    def _receive(recv, got: list, need: int, name: str, deadline: float, wait_s: float) -> None:
        """Take `need` arrays from one pipe (waiting until `deadline`), then whatever else is waiting."""
        taken = 0
        while taken < need or recv.probe():
            if not recv.probe():
                if time.monotonic() > deadline:
                    raise SimulationError(f"Lava population {name}: {taken} of {need} results arrived "
                                          f"within {wait_s:.0f} s after the run")
                time.sleep(0.001)
                continue
            got.append(np.asarray(recv.recv()).astype(np.int64))
            taken += 1

    def close_pipes(self) -> None:
        """Join the host ends of the external pipes. Lava starts a listener thread per external pipe and never
        joins it (those ports are not in the runtime's `_open_ports`); left running, ~4 threads leak per run
        and after ~90 runs in one process a later run hangs. Call after stop / teardown."""
        for proc in self._populations().values():
            for port in (proc.result_out, proc.trace_out, getattr(proc, "event_out", None)):
                recv = getattr(port, "external_pipe_csp_recv_port", None)
                if recv is not None:
                    try:
                        recv.join()
                    except Exception:  # noqa: BLE001 - already closed
                        pass

    def _stacked(self, key, want: int, shape) -> np.ndarray:
        got = self.received.get(key, [])
        if len(got) < want:
            raise SimulationError(f"Lava population {key if isinstance(key, str) else key[0]} delivered "
                                  f"{len(got)} of {want} results; run graph.num_steps = {self.num_steps} steps "
                                  "before collect()")
        return from_lava_layout(np.stack(got[-want:]), shape)

    def _event_counts(self, trace: Trace) -> None:
        """Trace.event_counts (messages per sample: |z| summed, stage 1 included) when some population sends
        more messages than its count says (signed models, offset calibration); None otherwise. Nodes without
        an event pipe send exactly their count."""
        piped = [name for name, p in self.neurons.items() if p.proc_params.get("events", False)]
        events = None
        if piped:
            events = {name: (self._stacked((name, "events"), self.n_samples, self.net.node(name).shape)
                             if name in piped else trace.spike_counts[name].copy()) for name in self.neurons}
        if "event_counts" in getattr(Trace, "__dataclass_fields__", {}):
            trace.event_counts = events
        elif events is not None:
            trace.extra["event_counts"] = events

    def collect(self) -> Trace:
        """Per-node spike counts (B, *shape) and readout potentials (B, K), int64, in IR layout (after running
        `num_steps` steps, before `stop()`). With record_steps, Trace.step_spikes[node] (T, *shape) and
        Trace.step_readout (T, K) hold every window step of the last sample."""
        self.drain()
        B, T = self.n_samples, self.timesteps
        counts = {name: self._stacked(name, B, self.net.node(name).shape) for name in self.neurons}
        readout = self._stacked(self.net.readout.name, B, self.net.readout.shape)
        trace = Trace(timesteps=T, spike_counts=counts, readout=readout, extra={"backend": BACKEND_LABEL})
        self._event_counts(trace)
        if self.record_steps:
            trace.step_spikes = {name: self._stacked((name, "trace"), T, self.net.node(name).shape)
                                 for name in self.neurons}
            trace.step_readout = self._stacked((self.net.readout.name, "trace"), T, self.net.readout.shape)
        return trace


def _flat_out(proc):
    """The OutPort of a population, flattened (C order of its Lava layout) when it is a map."""
    port = proc.s_out
    return port.flatten() if len(port.shape) != 1 else port


def _connect_out(a_out, dst_port) -> None:
    """Connect a connection's OutPort to a population's InPort, reshaping a flat output onto a map."""
    if tuple(a_out.shape) != tuple(dst_port.shape):
        a_out = a_out.reshape(tuple(dst_port.shape))
    a_out.connect(dst_port)


def _conv_process(syn: Synapse, src_shape: tuple[int, ...], bits: int, label: str, dst_name: str) -> Conv:
    """Lava Conv of a Conv2d or AvgPool2d synapse (exponent 0, (C, H, W) source), not yet connected."""
    op = syn.op
    if syn.exponent != 0:
        raise FitError(f"node {dst_name}: {op.kind} exponent from {syn.source} is {syn.exponent}; allowed: 0 "
                       "(Lava's Conv ignores weight_exp; put the exponent into the node's scale)")
    if len(src_shape) != 3:
        raise FitError(f"node {dst_name}: {op.kind} from {syn.source} needs a (C, H, W) source, got {src_shape}")
    if isinstance(op, Conv2d):
        kw = dict(weight=conv_weights_for_lava(op.weight), padding=op.padding[::-1], stride=op.stride[::-1],
                  groups=op.groups)
    else:
        kw = dict(weight=pool_weights_for_lava(op, src_shape[0]), padding=(0, 0), stride=op.stride[::-1],
                  groups=src_shape[0])
    # Lava's Conv with a vectorized fixed_pt model (same integers); looked up here so tests can swap it
    from na_deploy.hw_targets.loihi2.lava.processes.conv_fast import ConvFast
    return ConvFast(input_shape=lava_shape(src_shape), num_message_bits=bits, name=label, **kw)


def message_bits(syn: Synapse, source_proc) -> int:
    """num_message_bits of the connection from `source_proc`: graded pixels from the input, signed graded
    spikes from a signed model's population, 24-bit graded spikes from a graded node, binary (0) otherwise."""
    if syn.source == INPUT_NAME:
        return GRADED_MESSAGE_BITS
    neuron = source_proc.proc_params.get("neuron")
    if neuron in GRADED_MODELS:
        return GRADED_SPIKE_BITS
    return SIGNED_MESSAGE_BITS if neuron in SIGNED_MODELS else 0


def connect_synapse(syn: Synapse, source_proc, source_shape: tuple[int, ...], dst_port, dst_name: str,
                    dst_shape: tuple[int, ...]):
    """Create the Lava connection process of one IR synapse and wire source_proc.s_out -> it -> dst_port.

    source_shape / dst_shape are IR shapes; the populations are in Lava layout (`lava_shape`). Returns the
    connection process (Dense | Sparse | Conv). Raises FitError for what Lava cannot run exactly."""
    src_shape = tuple(int(a) for a in source_shape)
    bits = message_bits(syn, source_proc)
    label = f"{dst_name}<-{syn.source}:{syn.op.kind}"
    op = syn.op
    if isinstance(op, Dense):
        w = dense_weights_for_lava(op.weight, src_shape)
        check_lava_keeps(w, dst_name, syn)
        proc = LavaDense(weights=w, weight_exp=int(syn.exponent), num_message_bits=bits, name=label)
        _flat_out(source_proc).connect(proc.s_in)
    elif isinstance(op, Identity):
        if int(op.weight) == 0:
            raise FitError(f"node {dst_name}: identity gain from {syn.source} is 0; allowed: a non-zero integer gain")
        check_lava_keeps(np.array([[int(op.weight)]]), dst_name, syn)  # a diagonal: the gain decides the sign mode
        n = int(np.prod(src_shape))
        w = sp.identity(n, dtype=np.int64, format="csr") * int(op.weight)
        proc = Sparse(weights=sp.csr_matrix(w), weight_exp=int(syn.exponent), num_message_bits=bits, name=label)
        _flat_out(source_proc).connect(proc.s_in)
    elif isinstance(op, (Conv2d, AvgPool2d)):
        proc = _conv_process(syn, src_shape, bits, label, dst_name)
        if tuple(proc.a_out.shape) != lava_shape(dst_shape):
            raise FitError(f"node {dst_name}: Lava Conv from {syn.source} gives shape {tuple(proc.a_out.shape)}, "
                           f"node needs {lava_shape(dst_shape)}")
        source_proc.s_out.connect(proc.s_in)
    else:
        raise FitError(f"node {dst_name}: op {type(op).__name__} from {syn.source} has no Lava mapping")
    _connect_out(proc.a_out, dst_port)
    return proc


def _population(node, start: int, T: int, slot: int, B: int, record_steps: bool, buf: int,
                rho: int = 0) -> SubtractiveIF:
    """The Lava population of one neuron node; FitError for a neuron model the process cannot run."""
    if node.neuron.name not in NEURON_MODELS:
        raise FitError(f"node {node.name}: neuron model {node.neuron.name!r} has no Lava process model; "
                       f"allowed: {', '.join(NEURON_MODELS)}")
    if rho and node.neuron.name not in OFFSET_MODELS:
        raise FitError(f"node {node.name}: offset_steps {rho} (offset calibration) with neuron model "
                       f"{node.neuron.name!r}; allowed: offset_steps 0, or a net of {', '.join(OFFSET_MODELS)} nodes")
    bias = to_lava_layout(per_neuron(node.bias, node.shape)[None], node.shape)[0]
    return SubtractiveIF(shape=lava_shape(node.shape), vth=node.threshold, bias=bias, precharge=node.precharge,
                         neuron=node.neuron.name, depth=start, timesteps=T, slot=slot, n_samples=B,
                         record_steps=record_steps, result_buffer=buf, offset_steps=rho, name=node.name)


def window_starts(net: IntNet, timesteps: int) -> dict[str, int]:
    """Window start of every population in its slot (C3): the IR's rule, `na_deploy.ir.timing.window_starts`
    (input 0; one step per connection process; + T after an "accumulate" source). A net whose inputs into a
    node arrive at different steps is refused as FitError (the IR's message): Lava cannot run it."""
    try:
        return ir_window_starts(net, timesteps)
    except IRError as e:
        raise FitError(str(e)) from None


def net_offset_steps(net: IntNet, timesteps: int, offset_steps: Optional[int] = None) -> int:
    """rho of offset calibration: `offset_steps` when given (`check_offset_steps`: an integer >= 0), else the
    net's own (meta "offset_steps", 0 when it has none); SimulationError when rho > T (`check_offset_fits`)."""
    rho = ir_offset_steps(net) if offset_steps is None else check_offset_steps(offset_steps)
    check_offset_fits(rho, timesteps)
    return rho


def build_lava_graph(net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None,
                     n_samples: Optional[int] = None, record_steps: bool = False,
                     result_buffer: Optional[int] = None, offset_steps: Optional[int] = None) -> LavaGraph:
    """Build the Lava process graph of `net` for `timesteps` = T steps per sample.

    inputs: (B, *input_shape) integer pixels 0..255 (C4), or None (zeros, `n_samples` of them, default 1).
    record_steps: also send every window step's spikes / readout potential to the host
    (`Trace.step_spikes`, `Trace.step_readout`, last sample); used to locate the first differing step.
    result_buffer: samples the result pipes hold (default: all; `run_graph` drains them after each run).
    offset_steps: rho of offset calibration (default: the net's own `offset_steps`, 0 when it has none).
    Raises FitError for anything Lava cannot run exactly (conv exponent != 0, weights Lava would change, a
    neuron model the process does not implement, offset calibration of a model other than "subtract").
    """
    if not isinstance(net, IntNet):
        raise SimulationError(f"the Lava backend runs an IntNet (after fixed point), got {type(net).__name__}")
    T = check_timestep(timesteps)
    rho = net_offset_steps(net, T, offset_steps)
    x = check_pixels(inputs if inputs is not None else
                     np.zeros((int(n_samples or 1), *net.input.shape), dtype=np.int64), net.input.shape, PIXEL_MAX)
    B = x.shape[0]
    buf = int(result_buffer or B)
    start = window_starts(net, T)
    shapes = net.shapes()
    slot = steps_per_inference(net, T, rho)  # the readout's window start + rho + T
    populations: dict = {INPUT_NAME: GradedSource(data=to_lava_layout(x, net.input.shape), timesteps=rho + T,
                                                  slot=slot, num_message_bits=GRADED_MESSAGE_BITS, name=INPUT_NAME)}
    neurons: dict[str, SubtractiveIF] = {}
    synapses: dict[str, list] = {}
    for node in net.nodes:
        p = _population(node, start[node.name], T, slot, B, record_steps, buf, rho)
        synapses[node.name] = [connect_synapse(s, populations[s.source], shapes[s.source], p.a_in, node.name,
                                               node.shape) for s in node.inputs]
        populations[node.name] = neurons[node.name] = p
    r = net.readout
    readout = Accumulator(shape=lava_shape(r.shape), bias=per_neuron(r.bias, r.shape).reshape(-1),
                          depth=start[r.name] + rho, timesteps=T, slot=slot, n_samples=B, record_steps=record_steps,
                          result_buffer=buf, name=r.name)
    synapses[r.name] = [connect_synapse(s, populations[s.source], shapes[s.source], readout.a_in, r.name, r.shape)
                        for s in r.inputs]
    return LavaGraph(net=net, timesteps=T, n_samples=B, slot=slot, source=populations[INPUT_NAME],
                     neurons=neurons, readout=readout, synapses=synapses, record_steps=record_steps,
                     result_buffer=buf, offset_steps=rho, starts=start)


__all__ = ["BACKEND_LABEL", "GRADED_MESSAGE_BITS", "GRADED_SPIKE_BITS",
           "SIGNED_MESSAGE_BITS", "PIXEL_MAX", "LavaGraph", "connect_synapse",
           "message_bits", "window_starts", "net_offset_steps", "build_lava_graph"]
