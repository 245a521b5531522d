"""The provenance chain (C8, issue 11): what `na-deploy convert` records, byte-identical artifacts, and
`check_chain` on an intact chain and on each way to break it (a tampered IntNet, a swapped FloatNet, the wrong
checkpoint, an edited FloatNet whose hash was re-recorded, files written before the chain existed).

Checkpoints are real QAT checkpoints of the registry's digits_cnn (random BN statistics, as in
tests/test_convert_cli.py), converted by the real CLI; nothing is trained and nothing is mocked.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from na_deploy.training.checkpoint import Checkpoint, cpu_state_dict, save_checkpoint
from na_deploy.cli.simulate import load_net_pair
from na_deploy.cli.main import cli
from na_deploy.errors import NaDeployError
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.io import load_net, save_net
from na_deploy.ir import FloatNet, IntNet
from na_deploy.models import build_model
from na_deploy.verify.provenance import RERUN_ADVICE, check_chain, made_from, sha256_file
from na_deploy.training.surgery import quantize_model
from helpers import settle_batchnorm  # tests/helpers.py

KW = {"in_channels": 1, "num_classes": 10, "input_size": 8}


def _checkpoint(path, seed: int = 0, kind: str = "qat"):
    """A digits_cnn checkpoint with seeded random BN statistics (QAT: p=2, noise adaptor)."""
    torch.manual_seed(seed)
    model = build_model("digits_cnn", **KW)
    if kind == "qat":
        model = quantize_model(model, 2, True)
    settle_batchnorm(model, seed)
    extra = {"p": 2, "noise_adaptor": True} if kind == "qat" else {}
    return save_checkpoint(Checkpoint(kind=kind, model_name="digits_cnn", model_kwargs=dict(KW), input_shape=(1, 8, 8),
                                      num_classes=10, channel_scale=(1 / (255 * 0.3),),
                                      state_dict=cpu_state_dict(model.eval()), data_fingerprint="test", seed=seed,
                                      **extra), path)


def _convert(ckpt, folder):
    res = CliRunner().invoke(cli, ["convert", str(ckpt), "--out", str(folder / "net.nad.h5"), "--max-timesteps",
                                   "64", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return folder / "net.nad.h5", folder / "net.float.nad.h5"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(checkpoint, IntNet file, FloatNet file) written by `na-deploy convert`, in a folder of their own."""
    d = tmp_path_factory.mktemp("chain")
    ckpt = _checkpoint(d / "q.pt")
    return (ckpt, *_convert(ckpt, d))


@pytest.fixture()
def copy(chain, tmp_path):
    """A private copy of the chain's three files (tests edit them)."""
    return tuple(Path(shutil.copy(p, tmp_path / p.name)) for p in chain)


def _with_meta(path, **changes):
    """Rewrite a .nad.h5 file with meta keys changed (None deletes the key), its arrays untouched."""
    net = load_net(path)
    for k, v in changes.items():
        if v is None:
            net.meta.pop(k, None)
        else:
            net.meta[k] = v
    save_net(net, path)


# --------------------------------------------------------------------------------------- recording
def test_convert_records_each_link_by_name_and_sha256_not_path_or_time(chain):
    ckpt, net_p, float_p = chain
    fnet, inet = load_net(float_p), load_net(net_p)
    assert fnet.meta["made_from"] == {"kind": "checkpoint", "file": "q.pt", "sha256": sha256_file(ckpt)}
    assert inet.meta["made_from"] == {"kind": "float_net", "file": "net.float.nad.h5", "sha256": sha256_file(float_p)}
    assert made_from("float_net", float_p) == inet.meta["made_from"]
    for meta in (fnet.meta, inet.meta):
        assert not {"convert_s", "source", "float_net"} & set(meta)
        assert str(ckpt.parent) not in json.dumps(meta)  # no folder anywhere in the records
    with pytest.raises(ValueError, match="allowed: checkpoint, float_net, int_net"):
        made_from("model", float_p)


def test_same_checkpoint_in_two_folders_gives_byte_identical_nets(chain, tmp_path):
    ckpt, net_p, float_p = chain
    other = tmp_path / "elsewhere" / "deeper"
    other.mkdir(parents=True)
    net2, float2 = _convert(shutil.copy(ckpt, other / "q.pt"), other)
    assert float2.read_bytes() == float_p.read_bytes()
    assert net2.read_bytes() == net_p.read_bytes()


# ------------------------------------------------------------------------------------- intact chain
def test_intact_chain_from_checkpoint_and_from_floatnet(chain):
    ckpt, net_p, float_p = chain
    rep = check_chain(net_p, ckpt, TARGET)
    assert rep.ok and rep.broken is None
    assert [(link.frm, link.to, link.ok) for link in rep.links] == [(str(ckpt), str(float_p), True),
                                                                    (str(float_p), str(net_p), True)]
    d = rep.to_dict()
    assert d["ok"] is True and d["broken"] is None and [x["reason"] for x in d["links"]] == ["", ""]
    rep = check_chain(net_p, float_p, TARGET)
    assert rep.ok and [(link.frm, link.to) for link in rep.links] == [(str(float_p), str(net_p))]


# ------------------------------------------------------------------------------------ broken links
def test_tampered_intnet_names_node_and_fields(copy):
    """The issue's case: one layer's conv weights negated and its threshold set to 3, meta kept."""
    ckpt, net_p, float_p = copy
    inet = load_net(net_p)
    node = next(n for n in inet.nodes if n.inputs[0].op.kind == "conv2d")
    w = node.inputs[0].op.weight
    honest_w, honest_th = w.copy(), node.threshold
    node.inputs[0].op.weight = -w
    node.threshold = 3
    save_net(inet, net_p)
    rep = check_chain(net_p, ckpt, TARGET)
    assert not rep.ok and rep.links[0].ok and not rep.links[1].ok
    nz = np.argwhere(honest_w != 0)
    first = tuple(int(i) for i in nz[0])
    expected = (f"node {node.name}: weight differs from to_fixed_point(net.float.nad.h5): {len(nz)} of {w.size} "
                f"entries, first at {first}: {int(-honest_w[first])} in net.nad.h5 vs {int(honest_w[first])}; "
                f"threshold: 3 in net.nad.h5 vs {honest_th}")
    assert rep.links[1].reason == expected
    assert rep.broken == f"{float_p} -> {net_p}: {expected}"
    assert check_chain(net_p, float_p, TARGET).broken == rep.broken


def test_swapped_floatnet_breaks_its_link_by_sha256(copy, tmp_path):
    ckpt, net_p, float_p = copy
    other = tmp_path / "other"
    other.mkdir()
    _, float_other = _convert(_checkpoint(other / "q.pt", seed=1), other)
    shutil.copy(float_other, float_p)  # a FloatNet of another checkpoint, under the recorded name
    sha, rec = sha256_file(float_p), load_net(net_p).meta["made_from"]["sha256"]
    why = (f"net.float.nad.h5 is not the FloatNet net.nad.h5 was made from: its SHA-256 {sha[:12]}... differs from "
           f"the recorded {rec[:12]}... (of net.float.nad.h5)")
    rep = check_chain(net_p, float_p, TARGET)
    assert not rep.ok and rep.links[0].reason == why and rep.broken == f"{float_p} -> {net_p}: {why}"
    rep = check_chain(net_p, ckpt, TARGET)  # from the checkpoint both links are broken: the first is named
    assert [link.ok for link in rep.links] == [False, False] and rep.links[1].reason == why
    assert rep.broken.startswith(f"{ckpt} -> {float_p}: q.pt is not the checkpoint net.float.nad.h5 was made from")
    with pytest.raises(NaDeployError, match="is not the FloatNet"):  # simulate refuses the swap as before
        load_net_pair(str(net_p), None)


def test_wrong_checkpoint_breaks_the_first_link(chain, tmp_path):
    _, net_p, float_p = chain
    wrong = _checkpoint(tmp_path / "q.pt", seed=2)
    rep = check_chain(net_p, wrong, TARGET)
    assert [link.ok for link in rep.links] == [False, True]
    rec = load_net(float_p).meta["made_from"]["sha256"]
    assert rep.broken == (f"{wrong} -> {float_p}: q.pt is not the checkpoint net.float.nad.h5 was made from: its "
                          f"SHA-256 {sha256_file(wrong)[:12]}... differs from the recorded {rec[:12]}... (of q.pt)")


def test_edited_floatnet_with_rerecorded_hash_fails_rederivation(copy):
    """Hashes alone prove nothing if the records are rewritten: re-deriving from the checkpoint does."""
    ckpt, net_p, float_p = copy
    fnet = load_net(float_p)
    fnet.readout.bias[3] += 0.5
    save_net(fnet, float_p)
    _with_meta(net_p, made_from=made_from("float_net", float_p))
    rep = check_chain(net_p, ckpt, TARGET)
    want = f"node {fnet.readout.name}: bias differs from convert_checkpoint(q.pt): 1 of 10 entries, first at (3,): "
    assert not rep.links[0].ok and rep.links[0].reason.startswith(want), rep.links[0].reason
    fnet.readout.bias[3] -= 0.5  # meta is compared too (all but records, timing, paths and version)
    fnet.meta["checkpoint_epoch"] = 7
    save_net(fnet, float_p)
    _with_meta(net_p, made_from=made_from("float_net", float_p))
    rep = check_chain(net_p, ckpt, TARGET)
    assert rep.links[0].reason == "meta checkpoint_epoch differs from convert_checkpoint(q.pt): 7 in " \
                                  "net.float.nad.h5 vs 0" and rep.links[1].ok


def test_files_without_records_ask_to_rerun_convert(copy):
    ckpt, net_p, float_p = copy
    # a FloatNet of before the chain (a path and a wall time, no made_from) and an IntNet with the legacy record
    _with_meta(float_p, made_from=None, source=str(ckpt), convert_s=0.25)
    _with_meta(net_p, made_from=None, float_net={"file": "net.float.nad.h5", "sha256": sha256_file(float_p)})
    rep = check_chain(net_p, ckpt, TARGET)
    assert [link.ok for link in rep.links] == [False, True]  # the legacy IntNet record is still honoured
    assert rep.links[0].reason == ("net.float.nad.h5 records no checkpoint (no made_from: written before na-deploy "
                                   f"recorded the chain); {RERUN_ADVICE}")
    assert "re-run `na-deploy convert`" in rep.broken
    inet, fnet, _ = load_net_pair(str(net_p), None)  # simulate reads the legacy record
    assert isinstance(inet, IntNet) and isinstance(fnet, FloatNet)
    _with_meta(net_p, float_net=None)  # no record at all
    rep = check_chain(net_p, float_p, TARGET)
    assert rep.broken == (f"{float_p} -> {net_p}: net.nad.h5 records no FloatNet (no made_from: written before "
                          f"na-deploy recorded the chain); {RERUN_ADVICE}")


def test_missing_floatnet_sibling_breaks_both_links(copy):
    ckpt, net_p, float_p = copy
    float_p.unlink()
    rep = check_chain(net_p, ckpt, TARGET)
    assert [link.ok for link in rep.links] == [False, False]
    assert "its FloatNet net.float.nad.h5 is missing" in rep.broken


def test_bad_requests_are_one_line_errors(chain, tmp_path):
    ckpt, net_p, float_p = chain
    with pytest.raises(NaDeployError, match="missing.pt: file not found"):
        check_chain(net_p, tmp_path / "missing.pt", TARGET)
    with pytest.raises(NaDeployError, match=r"is a fixed-point IntNet; allowed: the QAT checkpoint or the FloatNet"):
        check_chain(net_p, net_p, TARGET)
    with pytest.raises(NaDeployError, match="is a FloatNet; allowed: the fixed-point IntNet"):
        check_chain(float_p, ckpt, TARGET)
    with pytest.raises(NaDeployError, match="is a 'fp' checkpoint"):
        check_chain(net_p, _checkpoint(tmp_path / "fp.pt", kind="fp"), TARGET)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"neither a checkpoint nor HDF5")
    with pytest.raises(NaDeployError, match="allowed as the start of the chain") as e:
        check_chain(net_p, junk, TARGET)
    assert "\n" not in str(e.value) and h5py.is_hdf5(float_p)
