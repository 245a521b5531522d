"""Issue 22 (2): exit codes 0 pass, 1 check failed, 2 usage / input / write error, 130 interrupted, 143
terminated; every failure is one line on stderr; a failed write names the path and the errno text and leaves
no temporary file."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from na_deploy.atomic import WriteError, atomic_write_text
from na_deploy.cli.main import cli
from na_deploy.errors import NaDeployError


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line(r, code, start="error: "):
    err = r.stderr.strip()
    assert r.exit_code == code, r.output
    assert err.startswith(start) and "\n" not in err, err
    return err


@pytest.mark.parametrize("args", [["verify", "n.nad.h5", "--bogus"], ["no-such-command"], ["verify"],
                                  ["report", "n.nad.h5", "--samples", "x"], ["export", "n.nad.h5"]])
def test_usage_errors_are_one_line_exit_2(args):
    err = one_line(invoke(*args), 2)
    assert "Usage:" not in err


def test_help_and_success_exit_0(net_file):
    assert invoke("--help").exit_code == 0
    assert invoke("report", net_file, "--samples", 0).exit_code == 0


def test_a_write_failure_is_one_line_naming_path_and_errno_text(net_file, tmp_path, monkeypatch):
    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    out = tmp_path / "r.json"
    err = one_line(invoke("report", net_file, "--samples", 0, "--json", out), 2)
    assert str(out) in err and os.strerror(errno.ENOSPC) in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_error_is_a_nadeploy_error_and_an_oserror(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(errno.EFBIG, "File too large")))
    with pytest.raises(WriteError) as e:
        atomic_write_text(tmp_path / "a.txt", "x")
    assert isinstance(e.value, NaDeployError) and isinstance(e.value, OSError) and e.value.errno == errno.EFBIG
    assert str(e.value) == f"{tmp_path / 'a.txt'}: cannot write (File too large)"
    assert list(tmp_path.iterdir()) == []


def test_an_output_under_a_file_is_refused_before_any_work(net_file, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    err = one_line(invoke("report", net_file, "--samples", 0, "--json", blocker / "r.json"), 2)
    assert "Not a directory" in err or "is not a folder" in err
    err = one_line(invoke("report", net_file, "--samples", 0, "--json", "/proc/na-deploy-r.json"), 2)
    assert "/proc/na-deploy-r.json" in err


def test_ctrl_c_is_one_line_exit_130(net_file, monkeypatch):
    import na_deploy.io

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(na_deploy.io, "load_net", interrupted)
    r = invoke("report", net_file, "--samples", 0)
    assert r.exit_code == 130 and "interrupted: nothing half-written left" in r.stderr
    assert [line for line in r.stderr.splitlines() if line.strip()] == [r.stderr.strip()]


def test_an_interrupted_pipeline_names_its_partial_folder(tmp_path, monkeypatch):
    import na_deploy.pipeline.run as run
    import na_deploy.pipeline.run_folder as run_folder
    import na_deploy.runlock

    monkeypatch.setattr(na_deploy.runlock, "_LEFT", [])

    def stops(cfg, target, out, force=False, log=print):
        with run_folder.run_folder(out, force, log, "pipeline"):
            raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_pipeline", stops)
    r = invoke("pipeline", "--out", tmp_path / "run")
    assert r.exit_code == 130 and f"interrupted: left {tmp_path / 'run.partial'}" in r.stderr


SLOW_COMMAND = textwrap.dedent("""
    import sys, time
    import na_deploy.io
    marker = sys.argv[2]
    def slow(*a, **k):
        try:
            print("running", flush=True)
            time.sleep(60)
        finally:
            open(marker, "w").write("finally ran")
    na_deploy.io.load_net = slow
    from na_deploy.cli.main import main
    sys.argv = ["na-deploy", "report", sys.argv[1], "--samples", "0"]
    main()
""")


def test_sigterm_runs_finally_blocks_and_exits_143(net_file, tmp_path):
    marker = tmp_path / "finally.txt"
    p = subprocess.Popen([sys.executable, "-c", SLOW_COMMAND, str(net_file), str(marker)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "running"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert err.strip().startswith("terminated (SIGTERM): ") and "\n" not in err.strip()
    assert marker.read_text() == "finally ran"


@pytest.mark.parametrize("option, value", [("--synop-pj", "-1"), ("--synop-pj", "nan"), ("--spike-pj", "inf"),
                                           ("--neuron-update-pj", "-0.5")])
def test_report_refuses_an_energy_that_is_not_finite_and_non_negative(net_file, option, value):
    """Issue 22 (10): `report --synop-pj -1` or `nan` printed an energy."""
    err = one_line(invoke("report", net_file, "--samples", 0, option, value), 2)
    assert f"{option} " in err and "a finite energy >= 0 pJ" in err


def test_report_refuses_more_samples_than_the_data_holds_like_verify(tmp_path):
    """Issue 22 (10): `report --samples 100000` was clamped silently; now refused, as verify refuses it."""
    import numpy as np

    from na_deploy.io import save_net
    from na_deploy.testing import random_intnet

    net = random_intnet(np.random.default_rng(0), "conv_chain")
    net_file = tmp_path / "conv.nad.h5"
    save_net(net, net_file)
    x = np.zeros((6, *net.input.shape), np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(6) % 2, x_test=x[:3], y_test=np.arange(3) % 2)
    err = one_line(invoke("report", net_file, "--data", tmp_path / "d.npz", "--samples", 100000), 2)
    assert "--samples 100000" in err and "has only 3 test images" in err
    assert invoke("report", net_file, "--data", tmp_path / "d.npz", "--samples", 3).exit_code == 0
    one_line(invoke("report", net_file, "--samples", 0, "--timesteps", 0), 2)


@pytest.mark.parametrize("writer", ["save_net", "write_nir"])
def test_hdf5_writes_under_a_file_size_limit_are_one_line_and_leave_nothing(tmp_path, writer):
    """Issue 22 (5): under `ulimit -f` the HDF5 writer traced back (and could crash) and left `.NAME.*.tmp`;
    nets are now built in memory and written by plain Python I/O, so it is one WriteError (EFBIG)."""
    code = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from na_deploy.atomic import WriteError
        from na_deploy.io import save_net
        from na_deploy.io.nir_io import write_nir
        from na_deploy.testing import random_intnet
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            {writer}(random_intnet(np.random.default_rng(0), "conv_chain"), {str(tmp_path / "out.h5")!r})
        except WriteError as e:
            print("WriteError:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-2000:]
    assert r.stdout.strip() == f"WriteError: {tmp_path / 'out.h5'}: cannot write (File too large)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf"])
def test_verify_timeout_must_be_finite_and_positive_before_lava_starts(net_file, value, monkeypatch):
    """Issue 22 (10): `verify --timeout -1|nan|inf|0` started Lava or traced back; now one line, exit 2, before
    anything runs."""
    import na_deploy.io

    monkeypatch.setattr(na_deploy.io, "load_intnet", lambda *a, **k: pytest.fail("verify went on"))
    err = one_line(invoke("verify", net_file, "--timeout", value), 2)
    assert f"--timeout {float(value)}: allowed: a finite number of seconds > 0" in err


def test_a_backend_failure_is_one_line_exit_3(net_file, monkeypatch):
    """Issue 22: a dead Lava worker (or a hung run) is a BackendFailure: exit 3, never 1 (a failed check) or 2."""
    import na_deploy.io
    from na_deploy.errors import BackendFailure

    def dies(*a, **k):
        raise BackendFailure("Lava process 'fc' (SubtractiveIF) (pid 123) killed by signal 9 (SIGKILL) during the "
                             "Lava run; rerun")

    monkeypatch.setattr(na_deploy.io, "load_intnet", dies)
    err = one_line(invoke("verify", net_file), 3)
    assert "(pid 123) killed by signal 9" in err


@pytest.mark.lava  # verify --backend lava: the shards are refused before they start where Lava is not installed
def test_a_crashed_jobs_shard_is_shard_crashed_exit_3(net_file, monkeypatch):
    """Issue 22: a --jobs child killed by a signal is ShardCrashed (a BackendFailure: exit 3) naming the shard;
    a child's bad request stays a ShardError (exit 2)."""
    import numpy as np

    from na_deploy.errors import BackendFailure
    from na_deploy.verify import gate
    from na_deploy.verify.jobs import ShardCrashed, run_verify_jobs

    with pytest.raises(ShardCrashed, match=r"^verify --shard [12]/2 \(pid \d+\) crashed: killed by signal 9") as e:
        run_verify_jobs([str(net_file)], 2, command=[sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    assert isinstance(e.value, BackendFailure) and "\n" not in str(e.value)
    with pytest.raises(ShardCrashed, match=r"exited with code 3: Lava process died; the other shards were stopped"):
        run_verify_jobs([str(net_file)], 2, command=[
            sys.executable, "-c", "import sys; sys.stderr.write('error: Lava process died\\n'); sys.exit(3)"])

    def crashed(*a, **k):
        raise ShardCrashed("verify --shard 1/2 (pid 7) crashed: killed by signal 9: no message on stderr")

    from na_deploy.verify import samples

    monkeypatch.setattr(samples, "select_samples", lambda *a, **k: (np.zeros((4, 8), np.uint8), list(range(4))))
    monkeypatch.setattr(gate, "_run_jobs", crashed)
    err = one_line(invoke("verify", net_file, "--jobs", 2, "--skip-fidelity"), 3)
    assert "--shard 1/2 (pid 7) crashed" in err
