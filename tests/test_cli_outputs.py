"""Issue 22 (1, 3): an output never overwrites an input, a directory, FIFO, device node or link; an option never
swallows a flag; --force never deletes a folder the command did not make; one run per --out folder. Every
refusal is one line `error: ...`, exit 2, nothing written (no Lava: each case is refused before it runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from na_deploy.atomic import atomic_write_text
from na_deploy.cli.main import cli
from na_deploy.errors import NaDeployError


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def refused(r, *words):
    """Exit 2 and one line `error: ...` naming every word."""
    err = r.stderr.strip()
    assert r.exit_code == 2, r.output
    assert err.startswith("error: ") and "\n" not in err, err
    for w in words:
        assert w in err, err
    return err


def unchanged(path, before: bytes):
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_convert_refuses_out_onto_its_checkpoint(tmp_path):
    ckpt = tmp_path / "qat.ckpt"
    ckpt.write_bytes(b"not really a checkpoint")
    refused(invoke("convert", ckpt, "--out", ckpt, "--no-self-check"), "--out", "is the input")
    unchanged(ckpt, b"not really a checkpoint")
    refused(invoke("convert", ckpt, "--out", tmp_path / "n.nad.h5", "--float-out", ckpt), "--float-out", "input")
    unchanged(ckpt, b"not really a checkpoint")


@pytest.mark.parametrize("option", ["--json", "--junit", "--write-golden"])
def test_verify_outputs_never_replace_the_net(net_file, option):
    before = net_file.read_bytes()
    refused(invoke("verify", net_file, option, net_file), option, "is the input")
    unchanged(net_file, before)


def test_verify_output_never_replaces_the_floatnet_beside_the_net(net_file):
    fnet = net_file.with_name("net.float.nad.h5")
    fnet.write_bytes(b"float")
    refused(invoke("verify", net_file, "--json", fnet), "--json", "net.float.nad.h5")
    assert fnet.read_bytes() == b"float"


def test_a_hard_link_of_the_input_is_the_input(net_file):
    link = net_file.with_name("same.json")
    os.link(net_file, link)
    refused(invoke("verify", net_file, "--json", link), "is the input")


def test_simulate_report_and_merge_outputs_never_replace_inputs(net_file, tmp_path):
    before = net_file.read_bytes()
    refused(invoke("simulate", net_file, "--plot", net_file), "--plot", "is the input")
    refused(invoke("simulate", net_file, "--json", net_file), "--json", "is the input")
    refused(invoke("report", net_file, "--samples", 0, "--json", net_file), "--json", "is the input")
    unchanged(net_file, before)
    shard = tmp_path / "s1.json"
    shard.write_text('{"shard": "1/2"}')
    refused(invoke("verify-merge", shard, "--json", shard), "--json", "is the input")
    assert shard.read_text() == '{"shard": "1/2"}'


def test_two_outputs_may_not_be_one_file(net_file, tmp_path):
    j = tmp_path / "v.json"
    refused(invoke("verify", net_file, "--json", j, "--junit", j), "--junit", "also --json")
    assert not j.exists()


def test_export_force_never_deletes_the_inputs_folder(tmp_path, net_file):
    run = tmp_path / "run"
    run.mkdir()
    (run / "COMPLETE").write_text("finished\n")
    net = run / "net.nad.h5"
    net.write_bytes(net_file.read_bytes())
    refused(invoke("export", net, "--out", run, "--force"), "--out", "holds the input")
    assert sorted(p.name for p in run.iterdir()) == ["COMPLETE", "net.nad.h5"]


def test_export_force_replaces_only_an_export_folder(tmp_path, net_file):
    other = tmp_path / "other"
    other.mkdir()
    (other / "COMPLETE").write_text("finished\n")
    (other / "fp.ckpt").write_bytes(b"weights")
    refused(invoke("export", net_file, "--out", other, "--force"), "--out", "COMPLETE", "does not write")
    assert (other / "fp.ckpt").read_bytes() == b"weights"


def test_export_nir_never_replaces_its_input(net_file):
    before = net_file.read_bytes()
    refused(invoke("export", net_file, "--format", "nir", "--out", net_file, "--force"), "is the input")
    unchanged(net_file, before)


def test_pipeline_out_never_holds_its_data(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "d.npz").write_bytes(b"data")
    refused(invoke("pipeline", "--data", run / "d.npz", "--out", run, "--force"), "--out", "holds the input")
    assert (run / "d.npz").read_bytes() == b"data"


def test_pipeline_force_replaces_only_a_finished_run(tmp_path):
    from na_deploy.pipeline.run_folder import prepare_out_dir

    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep")
    with pytest.raises(NaDeployError, match="no COMPLETE"):
        prepare_out_dir(home, force=True)
    assert (home / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "symlink"])
def test_an_output_is_never_a_directory_fifo_device_or_link(net_file, tmp_path, kind):
    target = {"directory": tmp_path / "d", "fifo": tmp_path / "f", "device": "/dev/null",
              "symlink": tmp_path / "l"}[kind]
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        (tmp_path / "real.json").write_text("{}")
        target.symlink_to(tmp_path / "real.json")
    refused(invoke("report", net_file, "--samples", 0, "--json", target), "--json")
    if kind == "symlink":
        assert target.is_symlink() and (tmp_path / "real.json").read_text() == "{}"


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_atomic_rename_never_replaces_a_link_or_node(tmp_path, kind):
    target = tmp_path / "t"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "symlink":
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.mkdir()
    with pytest.raises(NaDeployError, match=f"{target}: is a"):
        atomic_write_text(target, "x")
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_an_option_never_swallows_a_flag(net_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = refused(invoke("verify", net_file, "--json", "--quiet"))
    assert err == "error: option --json expects a FILE, got '--quiet' (an option); give a file name"
    refused(invoke("convert", "x.ckpt", "--out", "--quiet"), "--out", "'--quiet'")
    refused(invoke("report", net_file, "--json", "-h"), "--json", "'-h'")
    assert not (tmp_path / "--quiet").exists() and not (tmp_path / "-h").exists()


def test_dash_prints_the_json_to_stdout(net_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("report", net_file, "--samples", 0, "--json", "-")
    assert r.exit_code == 0, r.output
    assert isinstance(json.loads(r.stdout), dict)  # stdout is the JSON alone, the text went to stderr
    assert not (tmp_path / "-").exists()
    refused(invoke("simulate", net_file, "--plot", "-"), "--plot", "standard output")


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path):
    """The lock is held by another process (a child that takes it and waits); this process is refused, the
    holder's .partial stays; after the holder exits the folder is free again."""
    from na_deploy.pipeline.run_folder import prepare_out_dir, run_folder
    from na_deploy.runlock import lock_path_for

    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "fp.ckpt").write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from na_deploy.runlock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()"), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(NaDeployError, match=f"another run \\(pid {holder.pid}\\)"):
            with run_folder(out, False, lambda m: None, "pipeline"):
                pass
        with pytest.raises(NaDeployError, match=f"pid {holder.pid}"):
            prepare_out_dir(out)
        assert (partial / "fp.ckpt").read_bytes() == b"being written"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with run_folder(out, False, lambda m: None, "pipeline") as (final, run_dir):
        (run_dir / "COMPLETE").write_text("finished\n")
    assert (out / "COMPLETE").is_file() and not partial.exists() and not lock_path_for(out).exists()


def test_an_output_inside_a_run_folder_another_run_holds_is_refused(tmp_path, net_file):
    """`convert ... --out R/net.nad.h5` while a pipeline writes R (its lock held by another process): refused in
    one line naming the holder, exit 2, nothing written into R or R.partial; allowed once the holder exits."""
    from na_deploy.runlock import check_not_in_locked_run

    out = tmp_path / "R"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from na_deploy.runlock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); sys.stdin.read()"), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for target in (out / "net.nad.h5", tmp_path / "R.partial" / "lava" / "x.json"):
            with pytest.raises(NaDeployError, match=f"inside the run folder .*pid {holder.pid}"):
                check_not_in_locked_run(target)
        r = invoke("report", net_file, "--samples", 0, "--json", out / "r.json")
        assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
        assert "inside the run folder" in r.stderr and not out.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    check_not_in_locked_run(out / "net.nad.h5")  # released: no refusal


def test_the_final_rename_never_remakes_a_vanished_folder(tmp_path):
    import shutil

    from na_deploy.pipeline.run_folder import run_folder

    parent = tmp_path / "p"
    with pytest.raises(NaDeployError, match="vanished"):
        with run_folder(parent / "run", False, lambda m: None, "pipeline") as (_, run_dir):
            shutil.rmtree(parent)
    assert not parent.exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_bundle_folder_follows_the_umask_not_0700(tmp_path, umask):
    """Issue 22 (10): Lava bundles were created mode 0700 (mkdtemp's); a bundle is a folder like any other."""
    from na_deploy.hw_targets.loihi2.bundle import written_atomically

    old = os.umask(umask)
    try:
        with written_atomically(tmp_path / "bundle") as tmp:
            (tmp / "run.py").write_text("print()\n")
    finally:
        os.umask(old)
    assert (tmp_path / "bundle").stat().st_mode & 0o777 == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_a_bundle_that_cannot_be_written_is_one_line(tmp_path):
    from na_deploy.atomic import WriteError
    from na_deploy.hw_targets.loihi2.bundle import written_atomically

    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="bundle: cannot write"):
        with written_atomically(tmp_path / "file" / "bundle"):
            pass
    with pytest.raises(WriteError) as e:  # a file inside failing: the message names the bundle, not its temp folder
        with written_atomically(tmp_path / "b2") as tmp:
            raise WriteError(tmp / "net.nad.h5", OSError(27, "File too large"))
    assert str(e.value) == f"{tmp_path / 'b2'}: cannot write (File too large)"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
