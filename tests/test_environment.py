"""The installed stack is real: the lava-nc var_model patch is applied, Lava compiles and runs a tiny
fixed-point graph with the values its LIF/Dense equations give, and lava-dl's netx imports."""
import dataclasses
import inspect
import subprocess
import sys

import numpy as np
import pytest


def test_lava_var_model_patch_applied_and_imports():
    import lava.magma.compiler.var_model as vm

    src = inspect.getsource(vm)
    if sys.version_info >= (3, 11):  # on 3.10 the unpatched file imports as is
        assert "ByteEncoder = ByteEncoder()" not in src
        assert "field(default_factory=ByteEncoder)" in src
    a, b = vm.CoreEncoder(), vm.CoreEncoder()
    assert dataclasses.is_dataclass(a) and a.x is not b.x  # one ByteEncoder per instance


def lif_reference(steps, bias, vth, weight, vth2):
    """numpy model of Lava's fixed_pt LIF (du=4095, dv=0) -> Dense(weight) -> LIF, Dense delaying one step:
    u = a_in << 6;  v = v + u + bias;  spike if v > vth << 6, then v = 0."""
    v1 = v2 = 0
    spike_prev = 0
    for _ in range(steps):
        u2 = (weight * spike_prev) << 6  # the spike lif1 sent last step arrives now
        v1 = v1 + bias
        s1 = int(v1 > vth << 6)
        v1 = 0 if s1 else v1
        v2 = v2 + u2
        v2 = 0 if v2 > vth2 << 6 else v2
        spike_prev = s1
    return v1, v2


@pytest.mark.lava
def test_lava_compiles_and_runs_lif_dense_lif():
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    steps, bias_mant, bias_exp, vth, w, vth2 = 10, 3, 6, 10, 5, 100
    lif1 = LIF(shape=(1,), du=4095, dv=0, vth=vth, bias_mant=bias_mant, bias_exp=bias_exp)
    dense = Dense(weights=np.array([[w]]))
    lif2 = LIF(shape=(1,), du=4095, dv=0, vth=vth2, bias_mant=0, bias_exp=0)
    lif1.s_out.connect(dense.s_in)
    dense.a_out.connect(lif2.a_in)
    try:
        lif1.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v1, v2 = float(lif1.v.get()[0]), float(lif2.v.get()[0])
    finally:
        lif1.stop()
    # lif1 gains 3<<6 = 192 per step and fires when v > 640 (steps 4 and 8); lif2 gets 5<<6 at steps 5 and 9
    assert (v1, v2) == (384.0, 640.0)
    assert (v1, v2) == lif_reference(steps, bias_mant << bias_exp, vth, w, vth2)


def test_lava_dl_netx_imports():
    """`from lava.lib.dl import netx` (pulls slayer, torchvision, cv2) -- in a subprocess, so its heavy
    imports do not leak into the test process."""
    code = "from lava.lib.dl import netx; print(netx.hdf5.Network.__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "Network"
