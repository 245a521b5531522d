"""DDP through torchrun vs one process: seconds per epoch, accuracy and how far the weights drift apart.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timing/bench_ddp.py [--epochs 3] [--model digits_cnn] [--nproc 2]

Runs `torchrun --nproc_per_node N .venv/bin/na-deploy train ...` for N = 1 and --nproc (CPU, gloo) on the
embedded digits with the same seed and global batch, then prints per run the mean seconds per epoch, the test
accuracy, and the largest |difference| between the two runs' weights after the last epoch (float rounding of
the gradient all-reduce only: the 2-rank run computes the single-process steps on the same global batches).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
BIN = ROOT / ".venv" / "bin"


def run(nproc: int, epochs: int, model: str, out: Path, port: int) -> float:
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", str(port),
           str(BIN / "na-deploy"), "train", "--model", model, "--epochs", str(epochs), "--device", "cpu",
           "--quiet", "--out", str(out)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"torchrun --nproc_per_node {nproc} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="digits_cnn")
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    import torch

    from na_deploy.training.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpts, walls = {}, {}
        for i, n in enumerate(sorted({1, args.nproc})):
            walls[n] = run(n, args.epochs, args.model, Path(tmp) / f"w{n}.pt", 29700 + i)
            ckpts[n] = load_checkpoint(Path(tmp) / f"w{n}.pt")
        print(f"{args.model}, {args.epochs} epochs, global batch {ckpts[1].hparams['batch_size']}, CPU gloo, "
              f"torch {torch.__version__}, {os.cpu_count()} cores")
        print(f"{'ranks':>5} {'s/epoch':>8} {'wall s':>7} {'train loss':>10} {'test acc':>8}")
        for n, ck in ckpts.items():
            sec = sum(h["seconds"] for h in ck.history) / len(ck.history)
            last = ck.history[-1]
            print(f"{n:>5} {sec:>8.3f} {walls[n]:>7.1f} {last['train_loss']:>10.5f} {last['test_acc']:>8.4f}")
        if args.nproc != 1:
            a, b = ckpts[1].state_dict, ckpts[args.nproc].state_dict
            diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
            print(f"max |w(1 rank) - w({args.nproc} ranks)| after {args.epochs} epochs: {diff:.3g}")


if __name__ == "__main__":
    main()
