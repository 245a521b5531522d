"""Golden traces (na_deploy.verify.golden): the content digest of a net, the golden file's round trip, its deterministic
bytes, a changed net caught with its first difference named, and every corrupt file as a one-line GoldenError.

The net is the real path: registry digits_cnn -> quantize_model (random BN statistics, step size 0.3) ->
to_floatnet -> the Loihi 2 target's to_fixed_point; traces come from the target's reference simulator.
"""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from na_deploy.convert import to_floatnet
from na_deploy.data.arrays import load_digits_dataset
from na_deploy.verify.golden import (FORMAT_NAME, TOOLCHAIN, Golden, GoldenError, compare_golden, golden_report,
                                     load_golden, net_digest, toolchain_versions, write_golden)
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.io import load_net, save_net
from na_deploy.ir import Conv2d, Synapse
from na_deploy.ir.graph import replace_nodes
from na_deploy.models import build_model
from na_deploy.training.surgery import quantize_model
from helpers import settle_batchnorm  # tests/helpers.py
from na_deploy.verify.bit_exact import first_difference

T = 8


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    model = quantize_model(build_model("digits_cnn", 1, 10, 8, widths=(4, 8)), 2, True)
    settle_batchnorm(model, 0)
    fnet = to_floatnet(model.eval(), (1, 8, 8), (1 / (255 * 0.3),), name="digits_cnn")
    return fnet, TARGET.to_fixed_point(fnet, max_timesteps=16)


@pytest.fixture(scope="module")
def recorded(nets, tmp_path_factory):
    """(IntNet, inputs, reference trace, sample ids, golden file path)."""
    inet = nets[1]
    d = load_digits_dataset(0)
    ids = np.array([7, 3, 100, 41, 250, 12])
    x = d.x_test[ids]
    trace = TARGET.reference_simulate(inet, x, T)
    assert all(c.sum() > 0 for c in trace.spike_counts.values())  # a trace worth comparing
    path = write_golden(tmp_path_factory.mktemp("golden") / "net.golden.npz", inet, x, trace, ids, T)
    return inet, x, trace, ids, path


def _changed_weight(inet, node_name: str, delta: int):
    """A copy of `inet` with one conv weight of `node_name` changed by `delta`."""
    nodes = []
    for n in inet.nodes:
        if n.name == node_name:
            s = n.inputs[0]
            w = s.op.weight.copy()
            w[0, 0, 1, 1] += delta
            n = dataclasses.replace(n, inputs=[Synapse(s.source, Conv2d(w, s.op.stride, s.op.padding, s.op.groups),
                                                       s.exponent)])
        nodes.append(n)
    return replace_nodes(inet, nodes)


# ------------------------------------------------------------------------------------------ net digest
def test_digest_is_of_the_content_not_the_file_or_meta(nets, tmp_path):
    fnet, inet = nets
    d = net_digest(inet)
    assert len(d) == 64 and d == net_digest(inet)
    save_net(inet, tmp_path / "a.nad.h5")
    assert net_digest(load_net(tmp_path / "a.nad.h5")) == d
    assert net_digest(replace_nodes(inet, inet.nodes, convert_s=1.23, source="/elsewhere/q.pt")) == d
    assert net_digest(TARGET.to_fixed_point(fnet, max_timesteps=16)) == d  # a re-derivation: the same content
    assert net_digest(fnet) not in (d, net_digest(load_net(tmp_path / "a.nad.h5")))
    save_net(fnet, tmp_path / "f.nad.h5")
    assert net_digest(load_net(tmp_path / "f.nad.h5")) == net_digest(fnet)


def test_digest_sees_one_weight_a_dtype_a_field_and_a_name(nets):
    inet = nets[1]
    d = net_digest(inet)
    name = inet.nodes[1].name
    assert net_digest(_changed_weight(inet, name, 1)) != d
    n0 = inet.nodes[0]
    s = n0.inputs[0]
    narrow = Synapse(s.source, Conv2d(s.op.weight.astype(np.int32), s.op.stride, s.op.padding, s.op.groups))
    assert s.op.weight.dtype != np.int32
    assert net_digest(replace_nodes(inet, [dataclasses.replace(n0, inputs=[narrow]), *inet.nodes[1:]])) != d
    assert net_digest(replace_nodes(inet, [dataclasses.replace(n0, threshold=n0.threshold + 1),
                                           *inet.nodes[1:]])) != d
    assert net_digest(replace_nodes(inet, inet.nodes, readout=dataclasses.replace(
        inet.readout, bias_mant=inet.readout.bias_mant + np.eye(10, dtype=np.int64)[3]))) != d
    with pytest.raises(GoldenError, match="FloatNet or IntNet"):
        net_digest("net.nad.h5")


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_and_a_rerun_of_the_stored_inputs_compare_equal(recorded):
    inet, x, trace, ids, path = recorded
    g = load_golden(path)
    assert isinstance(g, Golden) and g.timesteps == T and g.samples == len(ids)
    assert np.array_equal(g.sample_ids, ids) and np.array_equal(g.inputs, x) and g.inputs.dtype == np.uint8
    assert list(g.spike_counts) == [n.name for n in inet.nodes] and g.readout_name == inet.readout.name
    for k, c in trace.spike_counts.items():
        assert g.spike_counts[k].dtype == np.int64 and np.array_equal(g.spike_counts[k], c)
    assert np.array_equal(g.readout, trace.readout)
    assert g.net_digest == net_digest(inet) and g.versions == toolchain_versions()
    assert g.info["target"] == "loihi2"
    assert compare_golden(g, trace) is None
    rerun = TARGET.reference_simulate(inet, g.inputs, g.timesteps)
    assert compare_golden(g, rerun, inet) is None and compare_golden(g, g.trace()) is None
    rep = golden_report(g, rerun, inet)
    assert rep["equal"] and rep["first_difference"] is None and rep["note"] is None
    assert rep["net_digest"] == rep["net_digest_now"] == net_digest(inet)
    json.dumps(rep)
    with np.load(path, allow_pickle=False) as z:  # a plain npz
        assert str(z["format"]) == FORMAT_NAME and sorted(z.files)[0] == "counts_0000"


def test_same_content_same_bytes_and_no_timestamps(recorded, tmp_path):
    inet, x, trace, ids, path = recorded
    again = write_golden(tmp_path / "again.npz", inet, x, trace, ids, T)
    assert again.read_bytes() == path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    other = write_golden(tmp_path / "other.npz", inet, x, trace, ids + 1, T)
    assert other.read_bytes() != path.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary files of the atomic writes are gone


# ------------------------------------------------------------------------------------------ differences
def test_one_weight_change_is_caught_with_its_first_difference_named(recorded):
    inet, x, trace, ids, path = recorded
    g = load_golden(path)
    name = inet.nodes[1].name
    changed = _changed_weight(inet, name, 60)
    got = TARGET.reference_simulate(changed, g.inputs, T)
    diff = compare_golden(g, got, changed)
    want = first_difference(g.trace(), got)  # verify's own first difference, by row
    assert diff is not None and want is not None
    assert diff["position"] == want["sample"] and diff["sample"] == int(ids[want["sample"]])
    assert diff["node"] == want["node"] == name  # nothing upstream changed
    assert tuple(diff["neuron"]) == want["neuron"] and (diff["golden"], diff["got"]) == (want["a"], want["b"])
    assert diff["golden"] == g.spike_counts[name][diff["position"]][tuple(diff["neuron"])]
    assert "net digest" in diff["note"] and "compared all the same" in diff["note"]
    rep = golden_report(g, got, changed)
    assert not rep["equal"] and rep["first_difference"]["node"] == name and rep["note"]


def test_a_readout_only_change_names_the_readout(recorded):
    inet, x, trace, ids, path = recorded
    g = load_golden(path)
    bumped = trace.readout.copy()
    bumped[4, 7] += 1
    diff = compare_golden(g, dataclasses.replace(trace, readout=bumped))
    assert diff == {"sample": int(ids[4]), "position": 4, "node": inet.readout.name, "neuron": [7],
                    "golden": int(trace.readout[4, 7]), "got": int(trace.readout[4, 7]) + 1}


def test_missing_node_is_a_difference_and_wrong_T_or_batch_an_error(recorded):
    inet, x, trace, ids, path = recorded
    g = load_golden(path)
    name = inet.nodes[0].name
    counts = {k: v for k, v in trace.spike_counts.items() if k != name}
    diff = compare_golden(g, dataclasses.replace(trace, spike_counts=counts))
    assert diff["node"] == name and (diff["golden"], diff["got"]) == ("present", "missing")
    with pytest.raises(GoldenError, match="recorded at T=8.*--timesteps 8"):
        compare_golden(g, dataclasses.replace(trace, timesteps=4))
    short = dataclasses.replace(trace, readout=trace.readout[:2],
                                spike_counts={k: v[:2] for k, v in trace.spike_counts.items()})
    with pytest.raises(GoldenError, match="holds 6 samples, the trace has 2"):
        compare_golden(g, short)


# ------------------------------------------------------------------------------------------ bad files
def _rewrite(src, dst, drop=(), **replace):
    """The golden archive at `src` with members dropped or replaced (written by np.savez)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    arrays.update(replace)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    dst.write_bytes(buf.getvalue())
    return dst


@pytest.mark.parametrize("case, fragment", [
    ("missing_file", "no such golden file"),
    ("garbage", "not a readable golden file"),
    ("truncated", "not a readable golden file"),
    ("no_info", "missing key 'info'"),
    ("wrong_format", "key 'format' is 'something-else'"),
    ("wrong_version", "key 'format_version' is 2"),
    ("short_counts", "key 'counts_0001' has shape"),
    ("float_readout", "key 'readout' has dtype float64"),
    ("pickled_info", "key 'info' cannot be read"),
    ("bad_info", "key 'info' holds no net_digest"),
    ("extra_key", "unexpected key 'counts_0009'"),
    ("repeated_ids", "key 'sample_ids'"),
])
def test_corrupt_files_are_one_line_errors_naming_file_and_key(recorded, tmp_path, case, fragment):
    path = recorded[4]
    bad = tmp_path / f"{case}.npz"
    with np.load(path, allow_pickle=False) as z:
        counts1, readout, ids = z["counts_0001"], z["readout"], z["sample_ids"]
    if case == "garbage":
        bad.write_text("not a zip\n")
    elif case == "truncated":
        bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case != "missing_file":
        _rewrite(path, bad, drop=("info",) if case == "no_info" else (), **{
            "wrong_format": {"format": np.asarray("something-else")},
            "wrong_version": {"format_version": np.asarray(2)},
            "short_counts": {"counts_0001": counts1[:3]},
            "float_readout": {"readout": readout.astype(np.float64)},
            "pickled_info": {"info": np.asarray([{"net_digest": "x"}], dtype=object)},
            "bad_info": {"info": np.asarray(json.dumps({"versions": {}}))},
            "extra_key": {"counts_0009": counts1},
            "repeated_ids": {"sample_ids": np.r_[ids[:-1], ids[0]]},
        }.get(case, {}))
    with pytest.raises(GoldenError) as e:
        load_golden(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(bad)) and fragment in msg, msg


def test_bad_writes_are_refused_and_write_nothing(recorded, tmp_path):
    inet, x, trace, ids, path = recorded
    out = tmp_path / "g.npz"
    with pytest.raises(GoldenError, match="recorded at T=8, not T=4"):
        write_golden(out, inet, x, trace, ids, 4)
    with pytest.raises(GoldenError, match="sample_ids must be distinct"):
        write_golden(out, inet, x, trace, np.r_[ids[:-1], ids[0]], T)
    with pytest.raises(GoldenError, match="inputs must be integer"):
        write_golden(out, inet, x.astype(np.float32), trace, ids, T)
    with pytest.raises(GoldenError, match="inputs have shape"):
        write_golden(out, inet, x[:3], trace, ids, T)
    with pytest.raises(GoldenError, match=f"trace counts of node {inet.nodes[0].name} are missing"):
        write_golden(out, inet, x, dataclasses.replace(trace, spike_counts={}), ids, T)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_toolchain_versions_names_each_package_and_none_for_a_missing_one():
    v = toolchain_versions()
    assert tuple(v) == TOOLCHAIN and v["numpy"] == np.__version__ and v["na-deploy"]
    assert toolchain_versions(("numpy", "no-such-package-na-deploy-test")) == {
        "numpy": np.__version__, "no-such-package-na-deploy-test": None}


# ------------------------------------------------------------------------------------------ inputs
def test_golden_inputs_are_checked_against_the_samples_run(recorded):
    """Issue 22 (10): a changed pixel, other ids or another shape is "golden inputs differ from the samples
    run" (a GoldenError: exit 2, a bad request), never blamed on the net; the file's own samples pass."""
    from na_deploy.verify.samples import check_golden_inputs

    inet, x, trace, ids, path = recorded
    g = load_golden(path)
    check_golden_inputs(g, x, ids)
    check_golden_inputs(g, x.astype(np.int64))  # the values, not the dtype
    changed = x.copy()
    changed[1, 0, 2, 3] = (int(changed[1, 0, 2, 3]) + 1) % 256
    with pytest.raises(GoldenError, match=rf"golden inputs differ from the samples run: 1 value\(s\) differ, first "
                                          rf"in sample {int(ids[1])} at \(0, 2, 3\)"):
        check_golden_inputs(g, changed, ids)
    with pytest.raises(GoldenError, match="golden inputs differ from the samples run: its sample ids"):
        check_golden_inputs(g, x, [int(i) + 1 for i in ids])
    with pytest.raises(GoldenError, match="golden inputs differ from the samples run: shape"):
        check_golden_inputs(g, x[:-1])
