"""The paper's transfer workflow end to end on a generated 64x64 image folder (issue 19 item 4).

A torchvision network (default torchvision:resnet18) with a weights file -- random-initialised here, since no
weights can be downloaded; a user passes the real ones -- goes through

    na-deploy pipeline --model SPEC --weights W.pth --reset-head --epochs-fp 0 --data DIR (noise adaptor on)

on an image folder of --size x --size pictures (the CIFAR-like shapes of benchmarks/data/make_cifar_like_npz.py,
upsampled), and the script prints the accuracy vs T, the verify verdict and the Loihi 2 resources. Before
training it tries the conversion once on the untrained model (`quantize_model` -> `to_floatnet`): a stage that
refuses stops the script there with its one-line reason (exit 2), so no QAT is spent on a net that cannot
convert. The pipeline's own refusals are printed the same way.

    nice -n 10 .venv/bin/python benchmarks/experiments/transfer_resnet18.py [--model torchvision:densenet121]
        [--size 64] [--train 200] [--test 50] [--epochs-qat 2] [--out runs/transfer_resnet18]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1].parent


def write_folder(root: Path, n_train: int, n_test: int, size: int, seed: int) -> int:
    """root/{train,val}/class_<k>/<i>.png of the CIFAR-like shapes at size x size; returns the class count."""
    from PIL import Image

    sys.path.insert(0, str(REPO / "benchmarks" / "data"))
    from make_cifar_like_npz import SIZE, make_split

    if size % SIZE:
        raise SystemExit(f"--size {size}: allowed: a multiple of {SIZE}")
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_test)):
        x, y = make_split(rng, n)
        x = x.repeat(size // SIZE, axis=2).repeat(size // SIZE, axis=3)
        for i, (img, k) in enumerate(zip(x, y)):
            folder = root / split / f"class_{int(k)}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return 10


def write_weights(spec: str, path: Path, seed: int) -> None:
    """The 'pretrained' state_dict: the builder's own 1000-class ImageNet shape, random-initialised."""
    from na_deploy.training.model_spec import build_external

    torch.manual_seed(seed)
    torch.save(build_external(spec, 3, 1000, 224).state_dict(), path)


def preflight(spec: str, weights: Path, classes: int, size: int) -> str | None:
    """The one-line reason the untrained net does not quantize / convert, or None when it converts."""
    from na_deploy.convert import to_floatnet
    from na_deploy.training.surgery import calibrate_step_sizes, quantize_model
    from na_deploy.training.weights import build_with_weights

    stage = "load weights"
    try:
        model, _ = build_with_weights(spec, {"in_channels": 3, "num_classes": classes, "input_size": size},
                                      str(weights), True)
        stage = "quantize"
        q = quantize_model(model.eval(), 2, True).eval()
        calibrate_step_sizes(q, torch.rand(4, 3, size, size))
        stage = "convert"
        to_floatnet(q, (3, size, size), 1.0 / 255, self_check=True, name=spec)
    except Exception as e:  # the stage and its one-line reason
        return f"{stage}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--epochs-qat", type=int, default=2)
    ap.add_argument("--timesteps", default="1,2,4,8,16,32")
    ap.add_argument("--verify-samples", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/transfer_resnet18")
    args = ap.parse_args()
    out = Path(args.out)
    data, weights, run = out / "images", out / "weights.pth", out / "run"
    if not (data / "val").is_dir():
        write_folder(data, args.train, args.test, args.size, args.seed)
    if not weights.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_weights(args.model, weights, args.seed)
    command = [str(Path(sys.executable).parent / "na-deploy"), "pipeline", "--model", args.model, "--weights",
               str(weights), "--reset-head", "--epochs-fp", "0", "--data", str(data), "--epochs-qat",
               str(args.epochs_qat), "--timesteps", args.timesteps, "--verify-samples", str(args.verify_samples),
               "--verify-timesteps", "8", "--seed", str(args.seed), "--out", str(run), "--force"]
    print("$ " + " ".join(command[1:]), flush=True)
    reason = preflight(args.model, weights, 10, args.size)
    if reason is not None:
        print(f"stopped before training: {args.model} at {args.size}x{args.size}: {reason}")
        raise SystemExit(2)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        print(f"stopped: the pipeline exited {done.returncode}: {last}")
        raise SystemExit(done.returncode)
    report = json.loads((run / "report.json").read_text())
    ts = sorted(report["snn_accuracy"]["integer"], key=int)
    print(f"{args.model} on {args.size}x{args.size} shapes ({args.train} train / {args.test} test), "
          f"QAT {args.epochs_qat} epochs from {weights.name}, noise adaptor on")
    print("| | ANN | " + " | ".join(f"T={t}" for t in ts) + " |\n|---|---:|" + "---:|" * len(ts))
    for kind in ("integer", "float"):
        print(f"| {kind} SNN | {100 * report['ann_accuracy']:.2f} | "
              + " | ".join(f"{100 * report['snn_accuracy'][kind][t]:.2f}" for t in ts) + " |")
    v, total = report["verify"], report["resources"]["total"]
    print(f"verify: {v['samples']} samples at T={v['timesteps']}: bit_exact={v['bit_exact']}; resources: "
          f"{total['neurons']} neurons, {total['synapses']} synapses, {total['cores']} cores, {total['chips']} chips")
    raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
