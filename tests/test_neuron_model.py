"""The neuron model as one strategy (contract C2 "Neuron modes"): the same step on every array type, the
in-place numpy form equal to the generic one, the stable HDF5 encoding, and refusal by name where a target
cannot run a model."""
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch

from na_deploy.errors import IRError
from na_deploy.io import load_net, save_net
from na_deploy.ir import NEURON_MODELS, SUBTRACT, IntNeuronNode, NeuronModel, Synapse, Dense, neuron_model
from na_deploy.testing import random_intnet
from na_deploy.hw_targets.loihi2 import Loihi2Target
from na_deploy.hw_targets.loihi2.limits import LOIHI2

MODELS = sorted(NEURON_MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_step_is_the_same_on_numpy_torch_and_scalars(name):
    model = neuron_model(name)
    rng = np.random.default_rng(0)
    v = rng.integers(-20, 40, size=(3, 50)).astype(np.int64)
    th = 7
    c = rng.integers(0, 3, size=v.shape) if model.stateful else None  # a stateful model's running count
    kw = (lambda a: {"count": a}) if model.stateful else (lambda a: {})
    ct = None if c is None else torch.from_numpy(c)
    v_np, z_np = model.fire_and_reset(v.copy(), th, **kw(c))
    v_t, z_t = model.fire_and_reset(torch.from_numpy(v.copy()), th, **kw(ct))
    v_f, z_f = model.fire_and_reset(v.astype(np.float64), float(th), **kw(c))
    assert np.array_equal(v_np, v_t.numpy()) and np.array_equal(z_np, z_t.numpy())
    assert np.array_equal(v_np, v_f) and np.array_equal(z_np, z_f)
    for i in range(v.size):  # python numbers, element by element
        vs, zs = model.fire_and_reset(int(v.flat[i]), th, **kw(None if c is None else int(c.flat[i])))
        assert (vs, int(zs)) == (int(v_np.flat[i]), int(z_np.flat[i]))
    v_in, z_in = v.copy(), np.empty(v.shape, dtype=model.spike_dtype)
    model.fire_and_reset_inplace(v_in, th, z_in, **kw(c))
    assert np.array_equal(v_in, v_np) and np.array_equal(z_in, z_np)
    for dtype in (torch.int64, torch.float32, torch.float64):  # the in-place form on tensors (float SNN, CUDA)
        v_t = torch.from_numpy(v.copy()).to(dtype)
        z_t = model.fire_and_reset_inplace(v_t, th if dtype == torch.int64 else float(th), **kw(ct))
        assert np.array_equal(v_t.numpy(), v_np.astype(v_t.numpy().dtype)) and np.array_equal(z_t.numpy(), z_np)
    for dtype in (torch.float32, torch.float64):  # the float SNN's step: spikes carry th (C2)
        v_t = torch.from_numpy(v.copy()).to(dtype)
        z_t, pay = model.emit_inplace(v_t, 7.0, **kw(ct))
        assert np.array_equal(v_t.numpy(), v_np.astype(v_t.numpy().dtype)) and np.array_equal(z_t.numpy(), z_np)
        assert pay.dtype == dtype and np.array_equal(pay.numpy(), 7.0 * z_np.astype(np.float64))
    v_f = v.astype(np.float64)
    z_f, pay = model.emit_inplace(v_f, 7.0, **kw(c))
    assert np.array_equal(v_f, v_np) and np.array_equal(pay, 7.0 * z_np)
    zt = torch.int8 if model.signed else torch.bool
    v_t, z_out = torch.from_numpy(v.copy()), torch.empty(v.shape, dtype=zt)
    assert model.fire_and_reset_inplace(v_t, th, z_out, **kw(ct)) is z_out and np.array_equal(z_out.numpy(), z_np)
    assert bool(np.any(z_np > 0)) and not bool(np.all(z_np))  # the sample exercises both branches
    if model.signed:
        assert bool(np.any(z_np < 0))


def test_subtract_is_the_papers_if_neuron_C2():
    v, z = SUBTRACT.fire_and_reset(np.array([6, 7, 8, 20]), 7)
    assert z.tolist() == [False, True, True, True] and v.tolist() == [6, 0, 1, 13]
    assert SUBTRACT.compare == ">=" and not SUBTRACT.signed and SUBTRACT.default_precharge(7.0) == 3.5


def test_unknown_model_is_refused_by_name():
    with pytest.raises(IRError, match="unknown neuron model 'leaky'; known: accumulate, graded, negative, subtract, "
                                      "zero"):
        neuron_model("leaky")
    with pytest.raises(IRError, match="unknown neuron model"):
        IntNeuronNode("a", (2,), [Synapse("input", Dense(np.ones((2, 2), dtype=int)))], threshold=2, neuron="leaky")
    assert isinstance(neuron_model(SUBTRACT), NeuronModel)


def test_hdf5_encodes_the_model_by_name(tmp_path):
    net = random_intnet(np.random.default_rng(0), "dense_chain")
    save_net(net, tmp_path / "n.nad.h5")
    with h5py.File(tmp_path / "n.nad.h5", "r") as f:
        names = {f["nodes"][k].attrs.get("reset") for k in f["nodes"] if f["nodes"][k].attrs["kind"] == "neuron"}
    assert names == {"subtract"}
    back = load_net(tmp_path / "n.nad.h5")
    assert all(n.neuron is SUBTRACT for n in back.nodes)
    with h5py.File(tmp_path / "n.nad.h5", "r+") as f:
        f["nodes/0000"].attrs["reset"] = "leaky"
    with pytest.raises(IRError, match="unknown neuron model 'leaky'"):
        load_net(tmp_path / "n.nad.h5")


def test_a_target_refuses_a_model_it_cannot_run_by_name():
    net = random_intnet(np.random.default_rng(0), "dense_chain")
    strict = Loihi2Target(replace(LOIHI2, neuron_models=()))
    v = strict.check_fit(net)
    assert v and all(x.quantity == "neuron model" and x.value == "subtract" for x in v)
    assert "neuron model = subtract" in str(v[0])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("topology", ["conv_pool_dense", "residual_conv"])
def test_every_model_runs_identically_in_the_fast_and_the_slow_reference_C6(name, topology):
    """Both references take their step from the node's model, so any registered model (a new one too) is
    checked fast == slow, numpy and torch engines, without another line of test."""
    from na_deploy.hw_targets.loihi2.reference.fast import reference_simulate
    from na_deploy.hw_targets.loihi2.reference.slow import slow_reference_simulate
    from na_deploy.ir import replace_nodes
    from na_deploy.testing import random_inputs

    rng = np.random.default_rng(3)
    base = random_intnet(rng, topology)
    net = replace_nodes(base, [replace(n, neuron=neuron_model(name)) for n in base.nodes])
    x = random_inputs(rng, net, 5)
    slow = slow_reference_simulate(net, x, 6)
    for engine in ("numpy", "torch"):
        fast = reference_simulate(net, x, 6, device="cpu", engine=engine)
        for k in slow.spike_counts:
            assert np.array_equal(fast.spike_counts[k], slow.spike_counts[k]), (engine, k)
        assert np.array_equal(fast.readout, slow.readout), engine
    assert sum(int(c.sum()) for c in slow.spike_counts.values()) > 0
