"""Lava backend of the Loihi 2 target: IntNet -> Lava process graph (Loihi2SimCfg, `fixed_pt`) -> Trace.

Importing this module imports Lava (which sets the multiprocessing start method to fork); the target
imports it lazily. Public API:

* `build_lava_graph(net, timesteps=8, inputs=None, ...) -> LavaGraph`: the process graph, not compiled.
  Run it in your own Lava session with `graph.readout.run(condition=RunSteps(num_steps=graph.num_steps),
  run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))`, then `graph.collect()` -> Trace, then `graph.readout.stop()`.
* `run_lava(net, inputs, timesteps, ...) -> Trace`: check_fit, build, run all samples in one runtime,
  collect, tear down (never hangs; a model's own exception surfaces as SimulationError).

Mapping (DESIGN: Lava facts; contract C2-C6)
-------------------------------------------
* one `SubtractiveIF` per neuron node, one `Accumulator` for the readout, one `GradedSource` for the input
  (lava_proc/). Every connection process below adds exactly one step of delay (C3), and a valid IntNet
  has all paths balanced (`net.depths()`), so node m sees its sources' payloads of one step earlier.
* layouts: a population of IR shape (C, H, W) lives in Lava layout (W, H, C) (what Lava's Conv reads and
  writes); any other shape lives flat, (prod(shape),), in the IR's C order. `to_lava_layout` /
  `from_lava_layout` convert (B, *shape) arrays.
* Dense -> `Dense(weights=W', weight_exp=e)`, W' = W with its columns permuted from the source's (C, H, W)
  flatten order to the (W, H, C) flatten of a Lava-layout source (`source.s_out.flatten()`); Lava computes
  a = W's (graded: W'x; binary: sum of the columns of spiking inputs) then a << e (e >= 0) or
  a >> -e (numpy arithmetic shift = floor, e < 0), exactly the IR's shift(y, e).
* Conv2d -> `Conv(weight=w[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))` (scipy convolve2d is a true
  convolution), padding / stride given as (x, y) = (w, h); exponent must be 0 (Lava's Conv ignores it).
* AvgPool2d(k, s, g) -> grouped Conv (groups = C) with kernel g * ones, stride s; exponent must be 0.
* Identity(g) -> `Sparse` diagonal g (weight_exp = e), on flattened ports for maps.
* payloads: graded from the input (num_message_bits = 8: raw pixels 0..255, C4), binary elsewhere.
* a residual add is several connection processes into one InPort (Lava sums them).
Dense / Sparse weights must be ones Lava's first-step clip/truncate keeps unchanged (`lava_kept_weights`);
the builder refuses anything else rather than let Lava change a weight.

Many samples, one runtime (C3): sample k occupies Lava steps k*L + 1 .. (k+1)*L, L = T + D (D: readout
depth); every population re-arms at its window start and sends its per-sample result (counts / final
potential) to the host through a Lava external pipe at its window end, so the graph is compiled once for
all samples. Measured (benchmarks/bench_lava.py, digits-sized conv net, T=8, 2 cores): ~50 ms/sample in one
runtime vs ~450 ms/sample rebuilt per sample. Pipes, not Var.get(): Lava's Var.get moves one value per
message (~20 us each: 2 s for 100 samples of a 1k-neuron net), a pipe one array per sample.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp

from na_deploy.errors import FitError, SimulationError


def _let_lava_choose_fork() -> None:
    """Lava calls `multiprocessing.set_start_method("fork")` at import, which raises "context has already been
    set" once anything has touched the default context -- any tqdm bar does (it creates a multiprocessing
    lock). When the method in use is already "fork" (chosen implicitly), the choice is cleared with the
    public `set_start_method(None, force=True)` so Lava's own call succeeds and still gets fork; a process
    that deliberately chose another method is refused with a clear error instead of Lava's traceback."""
    import sys

    if "lava.magma.runtime.message_infrastructure.multiprocessing" in sys.modules:
        return
    method = mp.get_start_method(allow_none=True)
    if method not in (None, "fork"):
        raise SimulationError(f"Lava needs the multiprocessing start method 'fork', but this process already "
                              f"uses {method!r}; run the Lava backend in a process that has not chosen another")
    if method is not None:
        mp.set_start_method(None, force=True)


_let_lava_choose_fork()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense as LavaDense  # noqa: E402
from lava.proc.sparse.process import Sparse  # noqa: E402
from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights  # noqa: E402

from na_deploy.ir import INPUT_NAME, AvgPool2d, Conv2d, Dense, Identity, IntNet, Synapse  # noqa: E402
from na_deploy.target import Trace  # noqa: E402

from .lava_proc.process import Accumulator, GradedSource, SubtractiveIF  # noqa: E402

RUN_TAG = "fixed_pt"
GRADED_MESSAGE_BITS = 8  # raw uint8 pixels (C4)
PIXEL_MAX = (1 << GRADED_MESSAGE_BITS) - 1
BACKEND = "lava-0.10-loihi2simcfg-fixed_pt"


# ------------------------------------------------------------------------------------------ layouts
def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava layout of an IR population shape: (C, H, W) -> (W, H, C); anything else -> (prod,)."""
    shape = tuple(int(s) for s in shape)
    return shape[::-1] if len(shape) == 3 else (int(np.prod(shape)),)


def to_lava_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, *shape) IR arrays -> (B, *lava_shape(shape))."""
    x = np.asarray(x)
    if len(shape) == 3:
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1))
    return x.reshape(x.shape[0], -1)


def from_lava_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, *lava_shape(shape)) -> (B, *shape) IR arrays (inverse of `to_lava_layout`)."""
    x = np.asarray(x)
    if len(shape) == 3:
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1))
    return x.reshape(x.shape[0], *shape)


def dense_weights_for_lava(weight: np.ndarray, source_shape: tuple[int, ...]) -> np.ndarray:
    """W' such that W' @ flatten_C(x_lava) == W @ flatten_C(x_ir): permute the columns of a (C, H, W)
    source into (W, H, C) order; other sources are already flat in IR order."""
    w = np.asarray(weight).astype(np.int64)
    if len(source_shape) != 3:
        return w
    c, h, wd = source_shape
    return np.ascontiguousarray(w.reshape(w.shape[0], c, h, wd).transpose(0, 3, 2, 1).reshape(w.shape[0], -1))


def conv_weights_for_lava(weight: np.ndarray) -> np.ndarray:
    """torch (Cout, Cin/g, kh, kw) cross-correlation -> Lava (Cout, kw, kh, Cin/g) true-convolution kernel."""
    return np.ascontiguousarray(np.asarray(weight).astype(np.int64)[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def pool_weights_for_lava(op: AvgPool2d, channels: int) -> np.ndarray:
    """AvgPool2d(k, s, g) as a grouped Conv kernel: g * ones, shape (C, kw, kh, 1)."""
    kh, kw = op.kernel
    return np.full((channels, kw, kh, 1), int(op.weight), dtype=np.int64)


def lava_kept_weights(weights) -> np.ndarray:
    """What Lava's fixed_pt Dense / Sparse model will actually use (its first-step clip to 8 bits and
    truncation with the default num_weight_bits=8 and the sign mode it determines itself)."""
    dense = weights.toarray() if sp.issparse(weights) else np.asarray(weights)
    mode = determine_sign_mode(dense)
    return truncate_weights(clip_weights(dense, mode, num_bits=8), mode, 8).astype(np.int64)


def check_lava_keeps(weights: np.ndarray, node: str, syn: Synapse) -> None:
    kept = lava_kept_weights(weights)
    bad = np.argwhere(kept != np.asarray(weights))
    if bad.size:
        i = tuple(int(a) for a in bad[0])
        raise FitError(f"node {node}: {syn.op.kind} weight from {syn.source} at {i} is {int(weights[i])}, which "
                       f"Lava's Dense/Sparse would change to {int(kept[i])}; allowed: 8-bit values that Lava keeps "
                       "(even in [-256, 254] for mixed-sign matrices, [0, 255] / [-255, 0] otherwise)")


# ---------------------------------------------------------------------------------------- the graph
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

    @property
    def num_steps(self) -> int:
        """Lava steps that run every sample: n_samples * (T + D)."""
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
            for port, key, per_sample in ((proc.result_out, name, 1),
                                          (proc.trace_out, (name, "trace"), self.timesteps)):
                recv = getattr(port, "external_pipe_csp_recv_port", None)
                if recv is None:
                    continue
                got = self.received.setdefault(key, [])
                need = samples * per_sample if (per_sample == 1 or self.record_steps) else 0
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
            for port in (proc.result_out, proc.trace_out):
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

    def collect(self) -> Trace:
        """Per-node spike counts (B, *shape) and readout potentials (B, K), int64, in IR layout (after running
        `num_steps` steps, before `stop()`). With record_steps, Trace.extra['step_spikes'][node] (T, *shape)
        and ['step_readout'] (T, K) hold every window step of the last sample."""
        self.drain()
        B, T = self.n_samples, self.timesteps
        counts = {name: self._stacked(name, B, self.net.node(name).shape) for name in self.neurons}
        readout = self._stacked(self.net.readout.name, B, self.net.readout.shape)
        extra: dict = {"backend": BACKEND}
        if self.record_steps:
            extra["step_spikes"] = {name: self._stacked((name, "trace"), T, self.net.node(name).shape)
                                    for name in self.neurons}
            extra["step_readout"] = self._stacked((self.net.readout.name, "trace"), T, self.net.readout.shape)
        return Trace(timesteps=T, spike_counts=counts, readout=readout, extra=extra)


def _get_int(var) -> np.ndarray:
    """Var.get() (Lava returns float64, exact for our integers) as int64 (small Vars only: one message per
    value)."""
    return np.rint(np.asarray(var.get(), dtype=np.float64)).astype(np.int64)


def _flat_out(proc):
    """The OutPort of a population, flattened (C order of its Lava layout) when it is a map."""
    port = proc.s_out
    return port.flatten() if len(port.shape) != 1 else port


def connect_synapse(syn: Synapse, source_proc, source_shape: tuple[int, ...], dst_port, dst_name: str,
                    dst_shape: tuple[int, ...]):
    """Create the Lava connection process of one IR synapse and wire source_proc.s_out -> it -> dst_port.

    source_shape / dst_shape are IR shapes; the populations are in Lava layout (`lava_shape`). Returns the
    connection process (Dense | Sparse | Conv). Raises FitError for what Lava cannot run exactly."""
    src_shape = tuple(int(a) for a in source_shape)
    bits = GRADED_MESSAGE_BITS if syn.source == INPUT_NAME else 0
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
        proc = Conv(input_shape=lava_shape(src_shape), num_message_bits=bits, name=label, **kw)
        if tuple(proc.a_out.shape) != lava_shape(dst_shape):
            raise FitError(f"node {dst_name}: Lava Conv from {syn.source} gives shape {tuple(proc.a_out.shape)}, "
                           f"node needs {lava_shape(dst_shape)}")
        source_proc.s_out.connect(proc.s_in)
    else:
        raise FitError(f"node {dst_name}: op {type(op).__name__} from {syn.source} has no Lava mapping")
    _connect_out(proc.a_out, dst_port)
    return proc


def _connect_out(a_out, dst_port) -> None:
    """Connect a connection's OutPort to a population's InPort, reshaping a flat output onto a map."""
    if tuple(a_out.shape) != tuple(dst_port.shape):
        a_out = a_out.reshape(tuple(dst_port.shape))
    a_out.connect(dst_port)


def build_lava_graph(net: IntNet, timesteps: int = 8, inputs: Optional[np.ndarray] = None,
                     n_samples: Optional[int] = None, record_steps: bool = False,
                     result_buffer: Optional[int] = None) -> LavaGraph:
    """Build the Lava process graph of `net` for `timesteps` = T steps per sample.

    inputs: (B, *input_shape) integer pixels 0..255 (C4), or None (zeros, `n_samples` of them, default 1).
    record_steps: also send every window step's spikes / readout potential to the host
    (`Trace.extra['step_spikes']`, `['step_readout']`, last sample); used to locate the first differing step.
    result_buffer: samples the result pipes hold (default: all; `run_graph` drains them after each run).
    Raises FitError for anything Lava cannot run exactly (conv exponent != 0, weights Lava would change).
    """
    if not isinstance(net, IntNet):
        raise SimulationError(f"the Lava backend runs an IntNet (after fixed point), got {type(net).__name__}")
    T = check_timesteps(timesteps)
    x = _check_inputs(net, inputs if inputs is not None else
                      np.zeros((int(n_samples or 1), *net.input.shape), dtype=np.int64))
    B = x.shape[0]
    buf = int(result_buffer or B)
    depth = net.depths()
    shapes = net.shapes()
    slot = T + depth[net.readout.name]
    populations: dict = {INPUT_NAME: GradedSource(data=to_lava_layout(x, net.input.shape), timesteps=T, slot=slot,
                                                  num_message_bits=GRADED_MESSAGE_BITS, name=INPUT_NAME)}
    neurons: dict[str, SubtractiveIF] = {}
    synapses: dict[str, list] = {}
    for node in net.nodes:
        shape = lava_shape(node.shape)
        bias = to_lava_layout(_per_neuron(node.bias, node.shape)[None], node.shape)[0]
        p = SubtractiveIF(shape=shape, vth=node.threshold, bias=bias, precharge=node.precharge,
                          depth=depth[node.name], timesteps=T, slot=slot, n_samples=B, record_steps=record_steps,
                          result_buffer=buf, name=node.name)
        synapses[node.name] = [connect_synapse(s, populations[s.source], shapes[s.source], p.a_in, node.name,
                                               node.shape) for s in node.inputs]
        populations[node.name] = neurons[node.name] = p
    r = net.readout
    readout = Accumulator(shape=lava_shape(r.shape), bias=_per_neuron(r.bias, r.shape).reshape(-1),
                          depth=depth[r.name], timesteps=T, slot=slot, n_samples=B, record_steps=record_steps,
                          result_buffer=buf, name=r.name)
    synapses[r.name] = [connect_synapse(s, populations[s.source], shapes[s.source], readout.a_in, r.name, r.shape)
                        for s in r.inputs]
    return LavaGraph(net=net, timesteps=T, n_samples=B, slot=slot, source=populations[INPUT_NAME],
                     neurons=neurons, readout=readout, synapses=synapses, record_steps=record_steps,
                     result_buffer=buf)


def _per_neuron(bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel bias (C,) broadcast over a node's shape (C, ...)."""
    b = np.asarray(bias, dtype=np.int64)
    return np.broadcast_to(b.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()


# ------------------------------------------------------------------------------------------ checks
def check_timesteps(timesteps) -> int:
    if isinstance(timesteps, bool) or not float(timesteps).is_integer() or int(timesteps) < 1:
        raise SimulationError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    return int(timesteps)


def _check_inputs(net: IntNet, inputs: np.ndarray) -> np.ndarray:
    """(B, *input_shape) integer pixels in [0, 255] as int64, else SimulationError."""
    x = np.asarray(inputs)
    want = tuple(net.input.shape)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
        raise SimulationError(f"inputs have shape {x.shape}; allowed: (B, {', '.join(map(str, want))}) for input "
                              f"node {INPUT_NAME!r}")
    if x.shape[0] < 1:
        raise SimulationError("inputs hold no samples; allowed: B >= 1")
    if not np.issubdtype(x.dtype, np.integer):
        if not (np.all(np.isfinite(x)) and np.all(x == np.round(x))):
            raise SimulationError(f"inputs have dtype {x.dtype} with non-integer values; allowed: integer pixels "
                                  f"0..{PIXEL_MAX} (C4)")
    x = x.astype(np.int64)
    if x.min() < 0 or x.max() > PIXEL_MAX:
        raise SimulationError(f"inputs hold values in [{int(x.min())}, {int(x.max())}]; allowed: integer pixels "
                              f"0..{PIXEL_MAX} (C4, graded spikes of {GRADED_MESSAGE_BITS} bits)")
    return x


def fit_violations(net: IntNet, timesteps: int) -> list:
    """The target's check_fit (imported lazily), [] where the target package is not available."""
    try:
        from na_deploy.hw_targets.loihi2 import TARGET
    except ImportError:
        return []
    try:
        return list(TARGET.check_fit(net, timesteps=timesteps))
    except TypeError:
        return list(TARGET.check_fit(net))


def refuse_unfit(net: IntNet, timesteps: int) -> None:
    """FitError (one line, first violations) when `net` fails the Loihi 2 fit check for T = timesteps."""
    v = fit_violations(net, timesteps)
    if v:
        more = f" (+{len(v) - 3} more)" if len(v) > 3 else ""
        raise FitError("net does not fit Loihi 2, refusing to run it on Lava: "
                       + "; ".join(str(x) for x in v[:3]) + more)


# ------------------------------------------------------------------------------------------ running
def model_exceptions(proc) -> list[tuple[BaseException, str]]:
    """(exception, traceback text) of every Lava actor (OS process) that raised, read from the runtime's
    message infrastructure (Lava itself only logs them)."""
    out = []
    runtime = getattr(proc, "runtime", None) or getattr(proc, "_runtime", None)
    infra = getattr(runtime, "_messaging_infrastructure", None)
    for actor in getattr(infra, "actors", []) or []:
        try:
            exc = actor.exception
        except Exception:  # pragma: no cover - closed pipe
            exc = None
        if exc:
            out.append(exc if isinstance(exc, tuple) else (exc, ""))
    return out


def abandon_runtime(proc) -> None:
    """Tear down a runtime that cannot be stopped (after a model error or a timeout; `stop()` would hang):
    terminate our Lava actors that are still alive, shut the shared-memory manager down."""
    runtime = getattr(proc, "runtime", None) or getattr(proc, "_runtime", None)
    infra = getattr(runtime, "_messaging_infrastructure", None)
    for actor in list(getattr(infra, "actors", []) or []):
        try:
            if actor.is_alive():
                actor.terminate()
                mp.Process.join(actor, 5)  # SystemProcess.join() takes no timeout
            if actor.is_alive():
                actor.kill()
                mp.Process.join(actor, 5)
        except (ValueError, AssertionError):  # already joined / closed by Lava
            pass
    for stop in (lambda: infra.smm.shutdown(), lambda: runtime._watchdog_manager.stop()):
        try:
            stop()
        except Exception:
            pass


def default_timeout(steps: int) -> float:
    """Seconds allowed for one `run` call of `steps` Lava steps before the run counts as hung."""
    return 120.0 + 5.0 * steps


def _run_blocking(proc, steps: int, cfg, timeout_s: float) -> None:
    """proc.run(RunSteps(steps)) in a daemon thread; raise TimeoutError when it does not return in time."""
    box: dict = {}

    def target():
        try:
            proc.run(condition=RunSteps(num_steps=int(steps)), run_cfg=cfg)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="lava-run", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise TimeoutError(f"Lava run of {steps} steps did not finish within {timeout_s:.0f} s")
    if "error" in box:
        raise box["error"]


def _describe_model_errors(proc, fallback: str) -> str:
    errs = model_exceptions(proc)
    if not errs:
        return fallback
    exc, tb = errs[0]
    last = [ln for ln in (tb or "").strip().splitlines() if ln.strip()]
    where = ""
    for ln in reversed(last):
        if ln.strip().startswith("File "):
            where = " at " + ln.strip()
            break
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{type(exc).__name__}: {exc}{where}{more}"


def default_samples_per_run(n_samples: int) -> int:
    """Samples per `run` call: about 20 calls (a progress bar that moves), at most 32 samples buffered."""
    return max(1, min(32, math.ceil(n_samples / 20)))


def run_graph(graph: LavaGraph, samples_per_run: Optional[int] = None, timeout_s: Optional[float] = None,
              progress: bool = False) -> Trace:
    """Compile and run `graph` for all its samples (chunks of `samples_per_run` <= graph.result_buffer per
    `run` call, results drained after each), collect the Trace, tear down. A model error ->
    SimulationError with the model's own exception message (the traceback text is in the exception's
    `lava_traceback`); a hang -> SimulationError after `timeout_s` per run call."""
    cfg = Loihi2SimCfg(select_tag=RUN_TAG)
    proc = graph.readout
    per = min(int(samples_per_run or default_samples_per_run(graph.n_samples)), graph.result_buffer)
    chunks = [min(per, graph.n_samples - s) for s in range(0, graph.n_samples, per)]
    healthy = False  # True only between successful run calls: stop() is safe then, and only then
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=graph.n_samples, desc="lava", unit="sample", leave=False)
    try:
        for n in chunks:
            steps = n * graph.slot
            healthy = False
            try:
                _run_blocking(proc, steps, cfg, timeout_s or default_timeout(steps))
            except TimeoutError as e:
                raise SimulationError(f"{e}; Lava process errors: "
                                      f"{_describe_model_errors(proc, 'none reported (a process is blocked)')}") from None
            except RuntimeError as e:
                err = SimulationError("Lava process model failed: " + _describe_model_errors(proc, str(e)))
                errs = model_exceptions(proc)
                err.lava_traceback = errs[0][1] if errs else ""
                raise err from (errs[0][0] if errs else e)
            healthy = True
            graph.drain(samples=n)
            if bar is not None:
                bar.update(n)
        t_run = time.perf_counter() - t0
        trace = graph.collect()
        trace.extra.update(seconds_run=t_run, seconds_total=time.perf_counter() - t0, lava_steps=graph.num_steps,
                           processes=len(graph.processes), samples_per_run=per)
        return trace
    finally:
        if bar is not None:
            bar.close()
        try:
            if healthy:
                proc.stop()
            elif getattr(proc, "runtime", None) is not None:
                abandon_runtime(proc)
        finally:
            graph.close_pipes()


def run_lava(net: IntNet, inputs: np.ndarray, timesteps: int, *, samples_per_run: Optional[int] = None,
             record_steps: bool = False, timeout_s: Optional[float] = None, progress: bool = False,
             check_fit: bool = True, on_build: Optional[Callable[[LavaGraph], None]] = None) -> Trace:
    """Run `net` in Lava (Loihi2SimCfg, fixed_pt) on integer `inputs` (B, *input_shape) for T = `timesteps`.

    Returns the same Trace as the reference simulator: spike_counts[node] (B, *shape) and readout (B, K),
    int64. Refuses (FitError) a net failing the target's check_fit before Lava starts. `on_build(graph)` may
    inspect or modify the graph before it runs (tests use it to inject a fault). Timing in `Trace.extra`.
    """
    T = check_timesteps(timesteps)
    if not isinstance(net, IntNet):
        raise SimulationError(f"the Lava backend runs an IntNet (after fixed point), got {type(net).__name__}")
    if check_fit:
        refuse_unfit(net, T)
    t0 = time.perf_counter()
    x = _check_inputs(net, inputs)
    per = int(samples_per_run or default_samples_per_run(len(x)))
    graph = build_lava_graph(net, T, x, record_steps=record_steps, result_buffer=per)
    if on_build is not None:
        on_build(graph)
    t_build = time.perf_counter() - t0
    trace = run_graph(graph, samples_per_run=per, timeout_s=timeout_s, progress=progress)
    trace.extra["seconds_build"] = t_build
    return trace


# ------------------------------------------------------------------------------------ verification (C6)
def reference_traces(net: IntNet, inputs: np.ndarray, timesteps_list) -> dict:
    """{T: Trace} from the target's fast reference (one run, read at every T), else the slow reference."""
    Ts = sorted(set(int(t) for t in timesteps_list))
    try:
        from na_deploy.hw_targets.loihi2 import TARGET

        multi = TARGET.reference_simulate_multi
    except (ImportError, AttributeError):
        from .reference_slow import slow_reference_simulate

        return {t: slow_reference_simulate(net, inputs, t) for t in Ts}
    return multi(net, inputs, Ts)


def step_of_difference(ref_steps: np.ndarray, lava_steps: np.ndarray) -> Optional[int]:
    """First window step (1-based) at which two (T, ...) per-step records differ, else None."""
    for j in range(min(len(ref_steps), len(lava_steps))):
        if not np.array_equal(ref_steps[j], lava_steps[j]):
            return j + 1
    return None


def reference_step_records(net: IntNet, x: np.ndarray, timesteps: int) -> tuple[dict, np.ndarray]:
    """Per-window-step spikes {node: (T, *shape)} and readout potentials (T, K) of ONE sample x (1, ...),
    from prefix runs (C3: the first j steps of a T-step run are a j-step run): spikes at step j =
    counts(j) - counts(j - 1); readout after step j = V(j)."""
    T = int(timesteps)
    tr = reference_traces(net, x, range(1, T + 1))
    spikes = {}
    for n in net.nodes:
        c = np.stack([tr[j].spike_counts[n.name][0] for j in range(1, T + 1)])
        spikes[n.name] = np.diff(c, axis=0, prepend=np.zeros_like(c[:1]))
    return spikes, np.stack([tr[j].readout[0] for j in range(1, T + 1)])


@dataclass
class VerifyReport:
    """Reference vs Lava on the same samples (C6): per-layer totals, readout, first mismatch, timing."""

    samples: int
    timesteps: int
    layers: list[dict]  # {node, reference, lava, equal}: total spikes over all samples
    readout_equal: bool
    mismatching_samples: int
    first_mismatch: Optional[dict]
    seconds: dict

    @property
    def equal(self) -> bool:
        return self.first_mismatch is None

    def to_dict(self) -> dict:
        return {"equal": self.equal, "samples": self.samples, "timesteps": self.timesteps, "layers": self.layers,
                "readout_equal": self.readout_equal, "mismatching_samples": self.mismatching_samples,
                "first_mismatch": self.first_mismatch, "seconds": self.seconds, "backend": BACKEND}


def _jsonable(d: Optional[dict]) -> Optional[dict]:
    if d is None:
        return None
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _jsonable(v)
        elif isinstance(v, (tuple, list)):
            v = [int(a) for a in v]
        elif isinstance(v, (np.integer,)):
            v = int(v)
        out[k] = v
    return out


def locate_step(net: IntNet, x: np.ndarray, timesteps: int, node: str, neuron, run_kwargs: dict) -> dict:
    """Re-run ONE sample x (1, ...) with per-step recording in Lava and in the reference; return the window
    step (1-based) and Lava step (depth + window step, within the sample's slot) at which `node[neuron]`
    first differs, and the earliest step at which any neuron of any node differs."""
    depth = net.depths()
    lava = run_lava(net, x, timesteps, record_steps=True, check_fit=False, **run_kwargs)
    ref_sp, ref_ro = reference_step_records(net, x, timesteps)
    lav_sp, lav_ro = lava.extra["step_spikes"], lava.extra["step_readout"]
    out: dict = {}
    idx = (slice(None), *neuron) if neuron is not None else (slice(None),)
    if node not in ref_sp:  # the readout
        j = step_of_difference(ref_ro[idx], lav_ro[idx])
    else:
        j = step_of_difference(ref_sp[node][idx], lav_sp[node][idx])
    out["step"] = j
    out["lava_step_in_slot"] = None if j is None else depth[node] + j
    earliest = None
    for n in net.nodes:
        jn = step_of_difference(ref_sp[n.name], lav_sp[n.name])
        if jn is not None:
            g = depth[n.name] + jn
            if earliest is None or g < earliest["lava_step_in_slot"]:
                where = np.argwhere(ref_sp[n.name][jn - 1] != lav_sp[n.name][jn - 1])[0]
                earliest = {"node": n.name, "neuron": [int(a) for a in where], "step": jn, "lava_step_in_slot": g}
    jr = step_of_difference(ref_ro, lav_ro)
    if jr is not None and (earliest is None or depth[net.readout.name] + jr < earliest["lava_step_in_slot"]):
        where = np.argwhere(ref_ro[jr - 1] != lav_ro[jr - 1])[0]
        earliest = {"node": net.readout.name, "neuron": [int(a) for a in where], "step": jr,
                    "lava_step_in_slot": depth[net.readout.name] + jr}
    out["earliest"] = earliest
    return out


def verify_lava(net: IntNet, inputs: np.ndarray, timesteps: int, *, locate: bool = True, progress: bool = False,
                **run_kwargs) -> VerifyReport:
    """Reference simulator vs Lava on the same samples, every node, every sample (C6).

    Refuses (FitError) a net failing check_fit before Lava starts. On a mismatch, `first_mismatch` names the
    sample, node, neuron, both values and (locate=True) the step, found by re-running that sample with
    per-step recording. `run_kwargs` go to `run_lava` (e.g. on_build, samples_per_run, timeout_s)."""
    from na_deploy.target import first_difference

    T = check_timesteps(timesteps)
    refuse_unfit(net, T)
    x = _check_inputs(net, inputs)
    t0 = time.perf_counter()
    ref = reference_traces(net, x, [T])[T]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    hw = run_lava(net, x, T, check_fit=False, progress=progress, **run_kwargs)
    t_lava = time.perf_counter() - t0
    layers = [{"node": k, "reference": int(ref.spike_counts[k].sum()), "lava": int(hw.spike_counts[k].sum()),
               "equal": bool(np.array_equal(ref.spike_counts[k], hw.spike_counts[k]))} for k in ref.spike_counts]
    bad = 0
    for s in range(len(x)):
        same = all(np.array_equal(ref.spike_counts[k][s], hw.spike_counts[k][s]) for k in ref.spike_counts)
        bad += int(not (same and np.array_equal(ref.readout[s], hw.readout[s])))
    first = first_difference(ref, hw)
    if first is not None:
        a, b = first.pop("a"), first.pop("b")
        if first["node"] not in ref.spike_counts:  # first_difference labels the readout "readout"
            first["node"] = net.readout.name
        first = _jsonable({**first, "reference": a, "lava": b})
        if locate:
            s = first["sample"]
            first.update(_jsonable(locate_step(net, x[s:s + 1], T, first["node"], first["neuron"], run_kwargs)))
    n = len(x)
    seconds = {"reference": t_ref, "lava": t_lava, "reference_per_sample": t_ref / n, "lava_per_sample": t_lava / n,
               "lava_over_reference": t_lava / max(t_ref, 1e-12),
               "lava_run": hw.extra.get("seconds_run"), "lava_build": hw.extra.get("seconds_build")}
    return VerifyReport(samples=n, timesteps=T, layers=layers, readout_equal=bool(np.array_equal(ref.readout, hw.readout)),
                        mismatching_samples=bad, first_mismatch=first, seconds=seconds)


# ------------------------------------------------------------------------------------------ export
RUN_SCRIPT = '''"""Rebuild and run this exported na-deploy network as a Lava process graph (Loihi2SimCfg, fixed_pt).

    python run_lava_graph.py [--inputs images.npz] [--samples N] [--timesteps T]

--inputs: an .npz holding integer pixels 0..255 shaped (N, {shape}) in array x_test (or x, or its first
array); without it the script runs one all-zero image (a smoke test). Needs lava-nc 0.10 and na-deploy.
"""
import argparse
from pathlib import Path

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg

from na_deploy.hw_targets.loihi2.lava_backend import build_lava_graph
from na_deploy.ir import load_net

HERE = Path(__file__).resolve().parent


def load_inputs(path, samples, shape):
    if path is None:
        return np.zeros((1, *shape), dtype=np.int64)
    with np.load(path) as z:
        key = next((k for k in ("x_test", "x") if k in z.files), z.files[0])
        x = z[key]
    return x[:samples] if samples else x


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", default=None)
    ap.add_argument("--samples", type=int, default=0)
    ap.add_argument("--timesteps", type=int, default={timesteps})
    args = ap.parse_args()
    net = load_net(HERE / "{net_file}")
    x = load_inputs(args.inputs, args.samples, net.input.shape)
    graph = build_lava_graph(net, timesteps=args.timesteps, inputs=x)
    proc = graph.readout  # any process of the graph compiles and runs all of it
    try:
        proc.run(condition=RunSteps(num_steps=graph.num_steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        trace = graph.collect()
    except RuntimeError:
        # A process model raised (Lava logs it); stop() would hang now, so do not call it.
        raise
    else:
        proc.stop()
    for name, c in trace.spike_counts.items():
        print(f"{{name:>24s}}  spikes {{int(c.sum()):>10d}}")
    print("predictions:", trace.predictions.tolist())


if __name__ == "__main__":
    main()
'''

README_TEXT = """na-deploy Lava export of {source}
{rule}
Files
  {net_file:<20s}  the IntNet (na-deploy IR, HDF5; load with na_deploy.ir.load_net)
  run_lava_graph.py     rebuilds the Lava process graph and runs it (python run_lava_graph.py --help)
  manifest.json         nodes, depths, Lava processes, format versions

Rebuild in your own Lava session:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from na_deploy.ir import load_net
    from na_deploy.hw_targets.loihi2.lava_backend import build_lava_graph
    graph = build_lava_graph(load_net("{net_file}"), timesteps=T, inputs=x)   # x: (N, {shape}) uint8
    graph.readout.run(condition=RunSteps(num_steps=graph.num_steps),
                      run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    trace = graph.collect()     # per-node spike counts (N, *shape), readout potentials (N, classes)
    graph.readout.stop()        # always, except after a RuntimeError from run (it would hang)

What runs where
  Lava's CPU simulation (Loihi2SimCfg, tag fixed_pt) runs na-deploy's own SubtractiveIF / Accumulator /
  GradedSource process models (integer, reset by subtraction, 24-bit membrane) and Lava's Dense, Sparse
  and Conv; `na-deploy verify` proves it bit-exact against the reference simulator. Lava has no neuron
  that resets by subtraction, so running this graph on Loihi 2 silicon needs a microcode version of the
  SubtractiveIF neuron (closed lava-loihi); na-deploy does not provide one.

Timing: one sample takes T + {depth} Lava steps (pipelined, one step per synaptic hop); N samples run
back to back in one runtime, each population re-arming at its window start.
"""


def export_lava_bundle(net: IntNet, out_dir, *, timesteps: int = 8, force: bool = False,
                       source: str = ""):
    """Write OUT_DIR = {net.nad.h5, run_lava_graph.py, README.txt, manifest.json} atomically (a temporary
    folder beside it, renamed into place). Refuses a net failing check_fit or one Lava cannot build, and an
    existing non-empty OUT_DIR unless force."""
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from na_deploy.errors import NaDeployError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NaDeployError(f"--out {out}: exists and is not a folder; allowed: a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise NaDeployError(f"--out {out}: folder exists and is not empty; allowed: a new or empty folder "
                            "(or --force to replace it)")
    T = check_timesteps(timesteps)
    refuse_unfit(net, T)
    graph = build_lava_graph(net, T)  # proves Lava can express it (never compiled or run here)
    depth = net.depths()
    net_file = "net.nad.h5"
    shape = ", ".join(map(str, net.input.shape))
    manifest = {"format": "na-deploy-lava-export", "version": 1, "backend": BACKEND, "net": net_file,
                "timesteps_default": T, "input_shape": list(net.input.shape), "readout": net.readout.name,
                "nodes": [{"name": n.name, "shape": list(n.shape), "depth": depth[n.name],
                           "lava_shape": list(lava_shape(n.shape)),
                           "synapses": [type(p).__name__ for p in graph.synapses[n.name]]} for n in net.all_nodes()],
                "lava_processes": len(graph.processes)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        net.save(tmp / net_file)
        (tmp / "run_lava_graph.py").write_text(RUN_SCRIPT.format(shape=shape, timesteps=T, net_file=net_file))
        title = f"na-deploy Lava export of {source or 'an IntNet'}"
        (tmp / "README.txt").write_text(README_TEXT.format(source=source or "an IntNet", rule="=" * len(title),
                                                           net_file=net_file, shape=shape,
                                                           depth=depth[net.readout.name]))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["LavaGraph", "build_lava_graph", "run_lava", "run_graph", "lava_shape", "to_lava_layout",
           "from_lava_layout", "dense_weights_for_lava", "conv_weights_for_lava", "lava_kept_weights",
           "model_exceptions", "refuse_unfit", "connect_synapse", "verify_lava", "VerifyReport", "locate_step", "export_lava_bundle"]
