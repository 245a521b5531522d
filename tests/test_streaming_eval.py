"""Bounded-memory accuracy vs T (issue 13 item 4): `accuracy_vs_timesteps` streams chunks and keeps tallies.
Chunked (arrays or a batch-iterator factory) equals one chunk bit for bit: accuracies, agreement, firing rates,
occasional noise, the spike totals behind the resource report; no simulator sees more than one chunk."""
import numpy as np
import pytest
import torch

from na_deploy.evaluate.accuracy import (CHUNK_TRACE_BYTES, MAX_BATCH, accuracy_vs_timesteps, auto_batch_size,
                                         iter_chunks, trace_bytes_per_image)
from na_deploy.convert import to_floatnet
from na_deploy.errors import SimulationError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.models import build_model
from na_deploy.evaluate.occasional_noise import firing_rates, merge_reports, noise_report
from na_deploy.training.surgery import quantize_model

TS = [1, 2, 4, 8]
N = 30


@pytest.fixture(scope="module")
def nets():
    """tiny_resnet (relays, p=2), float and fixed point, with N random images and labels."""
    torch.manual_seed(0)
    model = quantize_model(build_model("tiny_resnet", 1, 10, 12, widths=(8, 16)), 2, True, step_size=0.5).eval()
    fnet = to_floatnet(model, (1, 12, 12), [1 / (255 * 0.3)])
    inet = TARGET.to_fixed_point(fnet, max_timesteps=max(TS))
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(N, 1, 12, 12), dtype=np.uint8)
    y = rng.integers(0, 10, size=N)
    return fnet, inet, x, y


@pytest.fixture(scope="module")
def one_chunk(nets):
    fnet, inet, x, y = nets
    return accuracy_vs_timesteps(fnet, inet, TARGET, x, y, TS, device="cpu", progress=False, batch_size=None,
                                 keep_traces=N)


class CountingTarget:
    """TARGET, recording the batch sizes its reference simulator is called with."""

    def __init__(self):
        self.calls = []

    def reference_simulate_multi(self, net, x, ts, **kw):
        self.calls.append(len(x))
        return TARGET.reference_simulate_multi(net, x, ts, **kw)


def test_chunks_equal_one_chunk_bit_for_bit(nets, one_chunk):
    """Arrays in chunks of 7 and a factory of uneven batches (re-chunked to <= 5) give the same report, totals
    and first-sample traces as one chunk, and the integer simulator never sees more than one chunk."""
    fnet, inet, x, y = nets
    spy = CountingTarget()
    a = accuracy_vs_timesteps(fnet, inet, spy, x, y, TS, device="cpu", progress=False, batch_size=7)
    assert spy.calls == [7, 7, 7, 7, 2]
    cuts = [0, 13, 13, 25, N]  # an empty batch included
    spy = CountingTarget()
    b = accuracy_vs_timesteps(fnet, inet, spy, lambda: ((x[i:j], y[i:j]) for i, j in zip(cuts, cuts[1:])), None,
                              TS, device="cpu", progress=False, batch_size=5, total=N)
    assert max(spy.calls) == 5 and sum(spy.calls) == N
    ref = one_chunk.to_dict()
    assert ref["occasional_noise"]["integer"]["by_k"]  # noise measured (T = k*p for k = 1, 2, 4)
    for res in (a, b):
        assert res.to_dict() == ref and res.samples == N
        assert res.spike_totals.keys() == one_chunk.spike_totals.keys()
        assert all(np.array_equal(res.spike_totals[k], v) for k, v in one_chunk.spike_totals.items())
        for T in TS:
            first, full = res.sample_traces[T], one_chunk.sample_traces[T]
            assert first.batch == 16 and np.array_equal(first.readout, full.readout[:16])
            assert all(np.array_equal(v, full.spike_counts[k][:16]) for k, v in first.spike_counts.items())


def test_one_chunk_equals_the_all_traces_formulas(nets, one_chunk):
    """The tallies reproduce what the old code computed from whole-set traces: accuracy = mean(pred == y),
    firing_rates(counts, T), noise_report on all samples, spike totals = counts summed over samples."""
    fnet, inet, x, y = nets
    traces = TARGET.reference_simulate_multi(inet, x, TS, device="cpu")
    for T in TS:
        assert one_chunk.integer_accuracy[T] == float((traces[T].predictions == y).mean())
        assert one_chunk.firing_rates[T] == firing_rates(traces[T].spike_counts, T)
    assert all(np.array_equal(v, traces[8].spike_counts[k].sum(axis=0)) for k, v in one_chunk.spike_totals.items())
    assert min(one_chunk.agreement.values()) < 1  # float and integer SNN differ here: agreement is exercised


def test_resource_report_from_totals_equals_full_trace(nets, one_chunk):
    """target.resource_report on the totals trace (bounded) == on the whole set's trace at max(T), every float."""
    fnet, inet, x, y = nets
    full = TARGET.reference_simulate_multi(inet, x, [8], device="cpu")[8]
    tot = one_chunk.totals_trace()
    assert tot.extra["summed_over"] == N and all(v.shape[0] == 1 for v in tot.spike_counts.values())
    want = TARGET.resource_report(inet, full, inputs=x)
    assert TARGET.resource_report(inet, tot, inputs=x) == want
    assert want["per_inference"]["spikes"] > 0


def test_merge_reports_of_halves_equals_whole(nets):
    fnet, inet, x, y = nets
    from na_deploy.simulate.ann import ann_forward

    def rep(sl):
        _, lv = ann_forward(fnet, x[sl], device="cpu")
        tr = TARGET.reference_simulate_multi(inet, x[sl], [2, 4], device="cpu")
        return noise_report(inet, {T: t.spike_counts for T, t in tr.items()}, lv, [1, 2], "integer", inputs=x[sl])

    whole, a, b = rep(slice(None)), rep(slice(0, 11)), rep(slice(11, None))
    assert merge_reports(merge_reports(None, a), b).to_dict() == whole.to_dict()
    assert merge_reports(a, b).rows[1][0].samples == N
    with pytest.raises(SimulationError, match="merge_reports"):
        merge_reports(a, type(b)("float", b.rows))


def test_bad_input_is_a_one_line_error(nets):
    fnet, inet, x, y = nets
    run = (lambda xx, yy, **kw: accuracy_vs_timesteps(fnet, inet, TARGET, xx, yy, TS, device="cpu",
                                                       progress=False, **kw))
    for bad in (0, -3, 2.5, "big", True):
        with pytest.raises(SimulationError, match="batch_size must be a positive integer"):
            run(x, y, batch_size=bad)
    with pytest.raises(SimulationError, match="3 images and 2 labels"):
        run(x[:3], y[:2])
    with pytest.raises(SimulationError, match="pass y=None"):
        run(lambda: iter([(x, y)]), y)
    with pytest.raises(SimulationError, match="no samples"):
        run(lambda: iter([]), None)
    assert [len(a) for a, _ in iter_chunks(x, y, 12)] == [12, 12, 6]


def test_auto_batch_size_bounds_one_chunk_of_traces(nets):
    """"auto": one chunk's integer Traces within the budget, 1 to MAX_BATCH samples; the default."""
    fnet, inet, x, y = nets
    per = trace_bytes_per_image(inet, 32)
    assert per == 32 * 8 * (sum(int(np.prod(n.shape)) for n in inet.nodes) + 10)
    assert auto_batch_size(inet, 32) == min(MAX_BATCH, CHUNK_TRACE_BYTES // per)
    assert auto_batch_size(inet, 32, budget=5 * per + 1) == 5 and auto_batch_size(inet, 32, budget=1) == 1
    spy = CountingTarget()
    accuracy_vs_timesteps(fnet, inet, spy, x, y, TS, device="cpu", progress=False)  # default "auto": one chunk
    assert spy.calls == [N]
