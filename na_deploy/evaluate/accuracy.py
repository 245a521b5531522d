"""Accuracy of a converted network against its ANN, vs time steps T: the quantized ANN, the float SNN and the
integer SNN (the target's bit-exact reference simulator), float/integer prediction agreement, occasional noise
and firing rates. Shared by `na-deploy simulate` and `na-deploy pipeline`.

`accuracy_vs_timesteps(...)` returns an `AccuracyResult` (typed, keyed by int T); `AccuracyResult.to_dict()`
is the JSON both commands write (T as string keys).

Bounded memory (issue 13 item 4): the inputs are evaluated chunk by chunk (`batch_size` samples; arrays, or a
callable returning a fresh iterator of (x_uint8, y) numpy batches) and only running tallies are kept: correct
predictions and agreements per T (integers), per-node spike totals per T (integers), the occasional-noise sums
(`noise_report.merge_reports`), the per-neuron spike totals at the largest T (what the resource report and the
activity plot need: `AccuracyResult.totals_trace()`) and the integer Traces of the first `keep_traces`
samples. Every figure is an integer tally divided once at the end, so it equals the one-chunk figure bit for
bit (the float SNN runs in batches of 256 either way when `batch_size` is a multiple of 256). Peak memory is
one chunk's traces (all T), not the test set's: `batch_size="auto"` sizes the chunk so those stay within
CHUNK_TRACE_BYTES (256 images for the digits net at T = 1..32; 1 for a CIFAR ResNet-18, 210 MiB of traces per
image); `benchmarks/experiments/measure_eval_memory.py` measures the peak.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from na_deploy.errors import SimulationError
from na_deploy.ir import FloatNet, IntNet
from na_deploy.evaluate.occasional_noise import NoiseReport, noise_layers
from na_deploy.protocols import Target, Trace

MAX_BATCH = 256  # samples per chunk at most (simulate_float's batch of 256)
CHUNK_TRACE_BYTES = 256 * 2**20  # "auto" chunks: one chunk's integer Traces (all T) within 256 MiB
KEEP_TRACES = 16  # integer Traces of this many first samples are kept (AccuracyResult.sample_traces)

Batches = Callable[[], Iterable[tuple[Any, Any]]]


@dataclass
class AccuracyResult:
    """Every number of one accuracy-vs-T measurement on one set of samples (accuracies in [0, 1]).

    float_accuracy / integer_accuracy / agreement / firing_rates are keyed by T; `noise` maps the simulator
    ("integer", "float") to its occasional-noise report (empty when no T is k*p for every layer's p);
    `spike_totals` holds every node's per-neuron messages (`Trace.events()`) at max(T) summed over the `samples`
    samples (int64, node shape); `sample_traces` the integer reference Trace of the first `keep_traces` samples at
    every T (never the whole set's).
    """

    timesteps: list[int]
    ann_accuracy: float
    float_accuracy: dict[int, float]
    integer_accuracy: dict[int, float]
    agreement: dict[int, float]  # share of samples whose float and integer SNN classes agree
    firing_rates: dict[int, dict[str, float]]  # integer SNN: T -> node -> spikes / neuron / step
    noise: dict[str, NoiseReport] = field(default_factory=dict)
    samples: int = 0
    spike_totals: dict[str, np.ndarray] = field(default_factory=dict)
    sample_traces: dict[int, Trace] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (T as string keys), as written by `simulate --json` and in the pipeline's report."""
        return {
            "ann_accuracy": self.ann_accuracy,
            "snn_accuracy": {"float": {str(T): self.float_accuracy[T] for T in self.timesteps},
                             "integer": {str(T): self.integer_accuracy[T] for T in self.timesteps}},
            "prediction_agreement_float_vs_integer": {str(T): self.agreement[T] for T in self.timesteps},
            "firing_rates": {"integer": {str(T): self.firing_rates[T] for T in self.timesteps}},
            "occasional_noise": {sim: rep.to_dict() for sim, rep in self.noise.items()},
        }

    def totals_trace(self) -> Trace:
        """A Trace at max(T) whose spike_counts are `spike_totals` (1, *shape), summed over `samples` samples
        (extra["summed_over"]); what `Target.resource_report` reads for per-inference spikes and synops."""
        T = max(self.timesteps)
        ro = self.sample_traces[T].readout.shape[1:] if T in self.sample_traces else (0,)
        return Trace(timesteps=T, spike_counts={k: v[None] for k, v in self.spike_totals.items()},
                     readout=np.zeros((0,) + tuple(ro), dtype=np.int64),
                     extra={"summed_over": self.samples, "simulator": "totals of the reference simulator"})


def noise_ks(p_values: list[int], timesteps: list[int]) -> list[int]:
    """k with k*p among the simulated T for every layer's p (occasional noise needs counts at T = k*p)."""
    cands = sorted({T // p for T in timesteps for p in p_values if T % p == 0})
    return [k for k in cands if all(k * p in timesteps for p in p_values)]


def trace_bytes_per_image(net: Any, n_timesteps: int) -> int:
    """Bytes of one image's integer Traces at `n_timesteps` T: int64 counts of every node plus the readout."""
    return int(n_timesteps) * 8 * (sum(int(np.prod(n.shape)) for n in net.nodes) + int(np.prod(net.readout.shape)))


def auto_batch_size(net: Any, n_timesteps: int, budget: int = CHUNK_TRACE_BYTES) -> int:
    """Samples per chunk: as many as keep one chunk's Traces within `budget` bytes, 1 to MAX_BATCH."""
    return max(1, min(MAX_BATCH, int(budget) // trace_bytes_per_image(net, n_timesteps)))


def iter_chunks(x: Union[np.ndarray, Batches], y: Optional[np.ndarray],
                batch_size: Optional[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x, y) chunks of at most `batch_size` samples (None: arrays as one chunk, iterator batches as given)
    from arrays, or from `x()`, a fresh iterator of (x_uint8, y) batches (then `y` must be None)."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise SimulationError(f"batch_size must be a positive integer, \"auto\" or None (one chunk), got "
                              f"{batch_size!r}")
    if callable(x):
        if y is not None:
            raise SimulationError("accuracy vs T: with a batch iterator factory, pass y=None (labels come with "
                                  "the batches)")
        source = x()
    else:
        source = [(x, y)]
    for xb, yb in source:
        xb = np.asarray(xb)
        yb = np.asarray(yb).reshape(-1)
        if len(xb) != len(yb):
            raise SimulationError(f"accuracy vs T: a batch has {len(xb)} images and {len(yb)} labels")
        bs = len(xb) if batch_size is None else int(batch_size)
        for i in range(0, len(xb), max(bs, 1)):
            yield xb[i:i + bs], yb[i:i + bs]


class _Tally:
    """Running integer tallies of one accuracy-vs-T measurement (what `AccuracyResult` is computed from)."""

    def __init__(self, timesteps: list[int], keep_traces: int) -> None:
        self.ts, self.keep = timesteps, int(keep_traces)
        self.n = self.ann = 0
        self.float = dict.fromkeys(timesteps, 0)
        self.int = dict.fromkeys(timesteps, 0)
        self.agree = dict.fromkeys(timesteps, 0)
        self.spikes: dict[int, dict[str, int]] = {T: {} for T in timesteps}
        self.sizes: dict[str, int] = {}  # node -> neurons per sample
        self.totals: dict[str, np.ndarray] = {}  # node -> spike counts at max(T) summed over samples
        self.noise: dict[str, NoiseReport] = {}
        self.first: dict[int, list[Trace]] = {T: [] for T in timesteps}
        self.kept = 0

    def add(self, y: np.ndarray, ann_pred: np.ndarray, float_pred: dict, traces: dict[int, Trace],
            noise: dict[str, NoiseReport]) -> None:
        from na_deploy.evaluate.occasional_noise import merge_reports

        self.n += len(y)
        self.ann += int(np.count_nonzero(ann_pred == y))
        for T in self.ts:
            pred = traces[T].predictions
            self.float[T] += int(np.count_nonzero(float_pred[T] == y))
            self.int[T] += int(np.count_nonzero(pred == y))
            self.agree[T] += int(np.count_nonzero(pred == float_pred[T]))
            for name, c in traces[T].spike_counts.items():
                self.spikes[T][name] = self.spikes[T].get(name, 0) + int(c.sum())
                self.sizes[name] = int(np.prod(c.shape[1:]))
        for name, c in traces[max(self.ts)].events().items():  # messages sent (energy): = spike counts unless
            s = c.sum(axis=0, dtype=np.int64)                     # signed spikes or offset calibration's stage 1
            self.totals[name] = s if name not in self.totals else self.totals[name] + s
        for sim, rep in noise.items():
            self.noise[sim] = merge_reports(self.noise.get(sim), rep)
        take = min(self.keep - self.kept, len(y))
        if take > 0:
            for T in self.ts:
                tr = traces[T]
                self.first[T].append(Trace(timesteps=T, spike_counts={k: v[:take].copy() for k, v in
                                                                      tr.spike_counts.items()},
                                           readout=tr.readout[:take].copy(), extra=dict(tr.extra)))
            self.kept += take

    def result(self) -> AccuracyResult:
        if self.n == 0:
            raise SimulationError("accuracy vs T: no samples given")
        n = self.n

        def rates(T: int) -> dict[str, float]:  # = noise_report.firing_rates on the whole set, bit for bit
            return {k: float(s) / (n * self.sizes[k] * T) if n * self.sizes[k] else float("nan")
                    for k, s in self.spikes[T].items()}

        first = {T: Trace(timesteps=T, spike_counts={k: np.concatenate([t.spike_counts[k] for t in ts])
                                                     for k in ts[0].spike_counts},
                          readout=np.concatenate([t.readout for t in ts]), extra=ts[0].extra)
                 for T, ts in self.first.items() if ts}
        return AccuracyResult(
            timesteps=list(self.ts), ann_accuracy=self.ann / n,
            float_accuracy={T: self.float[T] / n for T in self.ts},
            integer_accuracy={T: self.int[T] / n for T in self.ts},
            agreement={T: self.agree[T] / n for T in self.ts},
            firing_rates={T: rates(T) for T in self.ts}, noise=dict(self.noise), samples=n,
            spike_totals=self.totals, sample_traces=first)


def _measure_chunk(fnet: FloatNet, inet: IntNet, target: Target, xb: np.ndarray, timesteps: list[int],
                   ks: list[int], device: Optional[str]) -> tuple:
    """One chunk through the three simulators: (ANN predictions, float predictions per T, integer Traces per
    T, {simulator: NoiseReport of this chunk})."""
    from na_deploy.simulate.ann import ann_forward, argmax_lowest
    from na_deploy.simulate.float_snn import simulate_float
    from na_deploy.evaluate.occasional_noise import noise_report

    noise_timesteps = sorted({k * int(n.p) for k in ks for n in noise_layers(fnet)})
    logits, levels = ann_forward(fnet, xb, device=device, keep_levels=bool(ks))
    fres = simulate_float(fnet, xb, timesteps, device=device, count_timesteps=noise_timesteps, progress=False)
    traces = target.reference_simulate_multi(inet, xb, timesteps, device=device, progress=False)
    noise = {}
    if ks:
        noise["integer"] = noise_report(inet, {T: traces[T].spike_counts for T in noise_timesteps}, levels, ks,
                                        simulator="integer", inputs=xb)
        noise["float"] = noise_report(fnet, fres.counts, levels, ks, simulator="float", inputs=xb)
    return argmax_lowest(logits).numpy(), fres.predictions, traces, noise


def accuracy_vs_timesteps(fnet: FloatNet, inet: IntNet, target: Target, x: Union[np.ndarray, Batches],
                          y: Optional[np.ndarray], timesteps: list[int], device: Optional[str] = None,
                          progress: bool = True, batch_size: Union[int, str, None] = "auto",
                          total: Optional[int] = None, keep_traces: int = KEEP_TRACES) -> AccuracyResult:
    """ANN, float SNN and integer SNN accuracy at every T in `timesteps` on (x, y), from one run per simulator
    and chunk; agreement, firing rates and occasional noise (NoiseReport per simulator) from the same runs.

    x, y: arrays (N, *input_shape) uint8 and (N,) labels, or x = a callable returning a fresh iterator of
    (x_uint8, y) numpy batches and y = None (`total`: the sample count, for the progress bar only).
    batch_size: samples per chunk; "auto" (`auto_batch_size`); None: one chunk, the old all-traces memory."""
    from tqdm.auto import tqdm

    timesteps = list(timesteps)
    layers = noise_layers(fnet)
    ks = noise_ks(sorted({int(n.p) for n in layers}), timesteps) if layers else []
    if total is None and not callable(x):
        total = len(x)
    if batch_size == "auto":
        batch_size = auto_batch_size(inet, len(timesteps))
    tally = _Tally(timesteps, keep_traces)
    with tqdm(total=total, desc="accuracy vs T", unit="img", disable=not progress, leave=False) as bar:
        for xb, yb in iter_chunks(x, y, batch_size):
            if len(xb):
                tally.add(yb, *_measure_chunk(fnet, inet, target, xb, timesteps, ks, device))
            bar.update(len(xb))
    return tally.result()


def format_accuracy_table(res: AccuracyResult) -> str:
    """The table `simulate` prints: ANN accuracy, then float / integer SNN accuracy and agreement per T."""
    lines = [f"quantized ANN accuracy: {100 * res.ann_accuracy:.2f}%",
             f"{'T':>4}  {'float SNN':>10}  {'integer SNN':>12}  {'agree float/int':>16}"]
    for T in res.timesteps:
        lines.append(f"{T:>4}  {100 * res.float_accuracy[T]:>9.2f}%  "
                     f"{100 * res.integer_accuracy[T]:>11.2f}%  "
                     f"{100 * res.agreement[T]:>15.2f}%")
    return "\n".join(lines)


__all__ = ["AccuracyResult", "accuracy_vs_timesteps", "format_accuracy_table", "noise_ks", "iter_chunks",
           "auto_batch_size", "trace_bytes_per_image", "MAX_BATCH", "CHUNK_TRACE_BYTES", "KEEP_TRACES"]
