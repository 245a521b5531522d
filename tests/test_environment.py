"""The installed stack is real: the lava-nc var_model patch is applied, Lava compiles and runs a tiny
fixed-point graph with the values its LIF/Dense equations give, and lava-dl's netx imports (tests marked `lava`).
Without Lava (an optional extra) the rest works: every Lava backend is refused in one line, `verify` exits 2 with
`error: Lava is not installed: ...`, and `pipeline` completes, says the Lava check did not run and leaves the
reference's trace as a golden file (docs/contract.md C6: nothing is called bit-exact that was not compared)."""
import dataclasses
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from na_deploy.errors import NaDeployError


@pytest.mark.lava
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


@pytest.mark.lava
def test_lava_dl_netx_imports():
    """`from lava.lib.dl import netx` (pulls slayer, torchvision, cv2) -- in a subprocess, so its heavy
    imports do not leak into the test process."""
    code = "from lava.lib.dl import netx; print(netx.hdf5.Network.__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "Network"


# ------------------------------------------------------------------ without Lava (here: Lava hidden, or absent)
@pytest.fixture
def no_lava(monkeypatch):
    """The Loihi 2 target as it is where Lava is not installed (where it is not, this changes nothing)."""
    from na_deploy.hw_targets.loihi2 import target

    monkeypatch.setattr(target, "installed", lambda module: False)
    return target


def test_lava_backends_refused_in_one_line_without_lava(no_lava):
    for name in (*no_lava.BACKENDS, None):
        with pytest.raises(no_lava.LavaNotInstalled) as e:
            no_lava.Loihi2Target().backend(name)
        msg = str(e.value)
        assert msg.startswith("Lava is not installed: --backend ") and "install with " in msg and "\n" not in msg
        assert isinstance(e.value, NaDeployError)


def test_verify_cli_refuses_without_lava_exit_2(no_lava, tmp_path):
    from na_deploy.cli.main import cli
    from na_deploy.io import save_net
    from na_deploy.testing import random_intnet

    net_path = tmp_path / "net.nad.h5"
    save_net(random_intnet(np.random.default_rng(0), "dense_chain"), net_path)
    for backend in no_lava.BACKENDS:
        r = CliRunner().invoke(cli, ["verify", str(net_path), "--backend", backend, "--samples", "2"])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert lines[-1].startswith(f"error: Lava is not installed: --backend {backend} runs on "), r.output


def test_pipeline_without_lava_completes_skips_verify_and_writes_golden(no_lava, tmp_path):
    from na_deploy.cli.main import cli
    from na_deploy.io import load_intnet
    from na_deploy.verify.golden import compare_golden, load_golden

    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["pipeline", "--out", str(out), "--epochs-fp", "1", "--epochs-qat", "1",
                                 "--timesteps", "2,4", "--eval-samples", "40", "--verify-samples", "5",
                                 "--verify-timesteps", "4"])
    assert r.exit_code == 0, r.output
    assert (out / "COMPLETE").is_file() and not (out / "lava").exists()
    assert "verify: SKIPPED, nothing compared (Lava is not installed)" in r.output and "BIT-EXACT" not in r.output
    verify = json.loads((out / "report.json").read_text())["verify"]
    assert verify["skipped"].startswith("Lava is not installed: ") and verify["bit_exact"] is None
    assert verify["samples"] == 0 and verify["layers"] == [] and verify["golden"]["file"] == "verify.golden.npz"
    assert "## Verify: skipped" in (out / "report.md").read_text()
    golden = load_golden(out / verify["golden"]["file"])
    assert (golden.samples, golden.timesteps) == (5, 4) and list(golden.sample_ids) == list(range(5))
    net = load_intnet(out / "net.nad.h5")
    assert compare_golden(golden, no_lava.Loihi2Target().reference_simulate(net, golden.inputs, 4), net) is None


# ------------------------------------------------------------------ numpy 1 (with Lava) and numpy 2 (without)
def _float32_net():
    """A FloatNet of float32 arrays and numpy float32 scalars: where numpy 1 and 2 promote differently (NEP 50: a
    float32 array times a numpy float64 scalar stays float32 on numpy 1 and becomes float64 on numpy 2), its fixed
    point, reference trace or golden file would differ between the two environments."""
    from na_deploy.ir import INPUT_NAME, Conv2d, Dense, FloatNet, InputNode, NeuronNode, ReadoutNode, Synapse

    f32 = np.float32
    w_conv = ((np.arange(18) % 7 - 3).astype(f32) * f32(0.013)).reshape(2, 1, 3, 3)
    conv = NeuronNode(name="conv", shape=(2, 4, 4), inputs=[Synapse(INPUT_NAME, Conv2d(w_conv, (1, 1), (1, 1)))],
                      threshold=f32(0.7), bias=np.array([0.1, -0.05], dtype=f32), p=2)
    w_out = ((np.arange(96) % 5 - 2).astype(f32) * f32(0.1)).reshape(3, 32)
    readout = ReadoutNode(name="readout", shape=(3,), inputs=[Synapse("conv", Dense(w_out))],
                          bias=np.array([0.01, 0.0, -0.01], dtype=f32))
    return FloatNet(InputNode((1, 4, 4), np.array([1 / 255], dtype=f32)), [conv], readout, meta={})


def test_fixed_point_trace_and_golden_content_same_on_numpy_1_and_2(tmp_path):
    """The IntNet's content digest and the golden file's members (npy headers and data, numpy's own format) are the
    ones recorded with numpy 1.26.4 (the pinned Lava environment) and numpy 2.4.6 (the core without Lava) alike;
    compared uncompressed, so that zlib's version does not count."""
    import hashlib
    import zipfile

    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.verify.golden import net_digest, write_golden

    inet = TARGET.to_fixed_point(_float32_net(), max_timesteps=8)
    x = (np.arange(6 * 16) * 37 % 256).astype(np.uint8).reshape(6, 1, 4, 4)
    trace = TARGET.reference_simulate(inet, x, 8)
    path = write_golden(tmp_path / "net.golden.npz", inet, x, trace, np.arange(6), 8, versions={"test": "fixed"})
    with zipfile.ZipFile(path) as z:
        members = hashlib.sha256(b"".join(n.encode() + z.read(n) for n in sorted(z.namelist()))).hexdigest()
    assert int(trace.spike_counts["conv"].sum()) == 500 and trace.readout[:2].tolist() == [[648, 5072, -664],
                                                                                             [-4560, 908, -1930]]
    assert net_digest(inet) == "52e48d9f1c1ba826d190a1056829711a754480d9bfcdb37627f7a08fff1b9861"
    assert members == "3b3be7bece3cceee5530aabbfbde6db379c5d2c22c86fbf7579393906e6defc4"
