"""Issue 22 (4): hostile files, the cheap checks. An IntNet field that is not an integer (a fraction, NaN,
infinity) is refused naming node and field, never cast; a .nad.h5 declaring a huge dataset is refused before
it is read; a verify shard whose verdict disagrees with its own records is refused by verify-merge; the
fidelity check skips, and says so in one line, a FloatNet beside the net that is not the one it was made from."""
from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest

from na_deploy.errors import IRError, NaDeployError
from na_deploy.io import load_net, save_net
from na_deploy.ir.ops import int_value
from na_deploy.testing import random_intnet
from na_deploy.verify.shards import merge_reports


@pytest.fixture()
def net_file(tmp_path):
    path = tmp_path / "net.nad.h5"
    save_net(random_intnet(np.random.default_rng(0), "dense_chain"), path)
    return path


def _first_node_group(f):
    return f["nodes"][sorted(f["nodes"].keys())[0]]


@pytest.mark.parametrize("value", [2.5, 22500.5, float("nan"), float("inf")])
@pytest.mark.parametrize("field", ["threshold", "precharge", "bias_exp"])
def test_non_integer_intnet_fields_are_refused_naming_node_and_field(net_file, field, value):
    with h5py.File(net_file, "r+") as f:
        g = _first_node_group(f)
        name = g.attrs["name"]
        g.attrs[field] = value
    with pytest.raises(IRError) as e:
        load_net(net_file)
    msg = str(e.value)
    assert str(net_file) in msg and f"node {name}: {field} must be an integer" in msg and "\n" not in msg


def test_a_float_exponent_is_refused(net_file):
    with h5py.File(net_file, "r+") as f:
        g = _first_node_group(f)["inputs"]
        g[sorted(g.keys())[0]].attrs["exponent"] = 0.5
    with pytest.raises(IRError, match="exponent must be an integer"):
        load_net(net_file)


def test_float_weights_and_biases_in_an_intnet_are_refused(net_file):
    with h5py.File(net_file, "r+") as f:
        g = _first_node_group(f)
        bias = g["bias_mant"][()]
        del g["bias_mant"]
        g["bias_mant"] = bias.astype(np.float64) + 0.5
    with pytest.raises(IRError, match="bias_mant must be integer"):
        load_net(net_file)


def test_integral_floats_are_values_not_casts():
    assert int_value(3.0, "x") == 3 and int_value(np.int16(-2), "x") == -2
    for bad in (2.5, float("nan"), "3", True):
        with pytest.raises(IRError, match="x must be an integer"):
            int_value(bad, "x")


def test_a_huge_declared_dataset_is_refused_before_reading(net_file):
    with h5py.File(net_file, "r+") as f:
        g = _first_node_group(f)["inputs"]
        syn = g[sorted(g.keys())[0]]
        del syn["weight"]
        syn.create_dataset("weight", shape=(2 ** 16, 2 ** 16), dtype=np.int64, chunks=(64, 64))  # nothing stored
    assert net_file.stat().st_size < 1 << 20
    with pytest.raises(IRError, match=r"declares shape \(65536, 65536\) \(4294967296 elements\); allowed: at most"):
        load_net(net_file)


def test_a_huge_declared_node_shape_is_refused(net_file):
    with h5py.File(net_file, "r+") as f:
        f["input"].attrs["shape"] = np.asarray([1 << 20, 1 << 20], dtype=np.int64)
    with pytest.raises(IRError, match="/input shape declares shape"):
        load_net(net_file)


def _shard_report(ids, bad=()):
    per = [{"sample": k, "equal": k not in bad, "first": None} for k in ids]
    equal = not bad
    return {"equal": equal, "samples": len(ids), "timesteps": 4,
            "layers": [{"node": "fc0", "reference": 7, "lava": 7 if equal else 6, "equal": equal}],
            "readout_equal": equal, "mismatching_samples": len(bad),
            "first_mismatch": None if equal else {"sample": min(bad), "node": "fc0"},
            "seconds": {"reference": 1.0, "lava": 2.0}, "backend": "lava", "sample_ids": list(ids),
            "per_sample": per, "net_digest": "d", "data": "digits"}


def test_merge_of_consistent_shards_passes():
    merged = merge_reports([{**_shard_report([0, 2]), "shard": "1/2"}, {**_shard_report([1, 3]), "shard": "2/2"}])
    assert merged["passed"] and merged["equal"]


@pytest.mark.parametrize("edit", ["equal_true_with_a_bad_sample", "count", "layer_totals", "per_sample_ids"])
def test_verify_merge_refuses_a_shard_whose_verdict_disagrees_with_its_records(edit):
    good = {**_shard_report([1, 3]), "shard": "2/2"}
    rep = {**_shard_report([0, 2], bad=(2,)), "shard": "1/2"}
    if edit == "equal_true_with_a_bad_sample":  # hand-edited verdict: equal, no first mismatch
        rep.update(equal=True, first_mismatch=None, readout_equal=True, mismatching_samples=0,
                   layers=[{"node": "fc0", "reference": 7, "lava": 7, "equal": True}])
    elif edit == "count":
        rep["mismatching_samples"] = 0
    elif edit == "layer_totals":
        rep = copy.deepcopy(good)
        rep.update(shard="1/2", sample_ids=[0, 2], per_sample=[{"sample": 0, "equal": True, "first": None},
                                                              {"sample": 2, "equal": True, "first": None}])
        rep["layers"][0]["lava"] = 9
    else:
        rep["per_sample"] = rep["per_sample"][:1]
    with pytest.raises(NaDeployError, match="s1.json: inconsistent report"):
        merge_reports([rep, good], names=["s1.json", "s2.json"])


def test_fidelity_skips_a_floatnet_that_is_not_the_one_the_net_was_made_from(tmp_path, capsys):
    from na_deploy.verify.gate_checks import find_float_net

    net = random_intnet(np.random.default_rng(1), "dense_chain")
    net.meta["made_from"] = {"kind": "float_net", "file": "net.float.nad.h5", "sha256": "0" * 64}
    path = tmp_path / "net.nad.h5"
    save_net(net, path)
    (tmp_path / "net.float.nad.h5").write_bytes(b"another float net")
    assert find_float_net(net, path, None) is None
    err = capsys.readouterr().err.strip()
    assert err.startswith("fidelity: skipped: ") and "not the FloatNet" in err and "\n" not in err


def _npz_with_huge_member(path, arrays: dict, key: str, shape, descr="<i8"):
    """An npz holding `arrays`, with member `key` replaced by a header declaring `shape` and 16 bytes of data."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    with zipfile.ZipFile(path, "w") as z:
        for k, a in arrays.items():
            member = io.BytesIO()
            np.save(member, a)
            z.writestr(f"{k}.npy", head.getvalue() + bytes(16) if k == key else member.getvalue())


def test_npz_data_declaring_more_than_it_holds_is_refused_before_allocating(tmp_path):
    from na_deploy.data.arrays import load_npz
    from na_deploy.errors import DataError

    x = np.zeros((4, 1, 2, 2), np.uint8)
    arrays = {"x_train": x, "y_train": np.arange(4) % 2, "x_test": x, "y_test": np.arange(4) % 2}
    _npz_with_huge_member(tmp_path / "d.npz", arrays, "x_train", (10 ** 10, 1, 28, 28), "|u1")
    with pytest.raises(DataError, match=r"member x_train.npy declares shape \(10000000000, 1, 28, 28\) of uint8 "
                                        r"\(7840000000000 bytes\) but holds 16 bytes"):
        load_npz(tmp_path / "d.npz")


def test_a_golden_file_declaring_a_huge_member_is_refused(tmp_path):
    from na_deploy.verify.golden import GoldenError, load_golden

    _npz_with_huge_member(tmp_path / "g.npz", {"format": np.asarray("na-deploy-golden"), "inputs": np.zeros(3)},
                          "inputs", (10 ** 10,))
    with pytest.raises(GoldenError, match=r"member inputs.npy declares shape \(10000000000,\)"):
        load_golden(tmp_path / "g.npz")
    np.save(tmp_path / "g.npy", np.zeros(3))  # a bare .npy is not a golden file: one line, no traceback
    with pytest.raises(GoldenError, match="not a readable golden file"):
        load_golden(tmp_path / "g.npy")


def test_an_array_in_a_field_gives_one_line(net_file):
    with h5py.File(net_file, "r+") as f:
        g = _first_node_group(f)["inputs"]
        g[sorted(g.keys())[0]].attrs["exponent"] = np.full((3, 3), np.inf)
    with pytest.raises(IRError) as e:
        load_net(net_file)
    assert "exponent must be an integer" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key, value", [("layers", None), ("samples", 2.0), ("seconds", {"lava": float("nan")}),
                                        ("first_mismatch", {"node": "fc0"}), ("equal", "yes")])
def test_verify_merge_refuses_fields_of_the_wrong_type_naming_the_key(key, value):
    rep = {**_shard_report([0, 2]), "shard": "1/2", key: value}
    with pytest.raises(NaDeployError, match=f"s1.json: key '{key}' is .*; allowed: "):
        merge_reports([rep, {**_shard_report([1, 3]), "shard": "2/2"}], names=["s1.json", "s2.json"])
