"""torchvision's ResNet-18 stem against our own stride-2 stem, and MobileNetV2, on the same 64x64 images (issue 19).

Generates the 64x64 image folder of `transfer_resnet18.py` (the CIFAR-like shapes, --train / --test images),
then runs, one after the other, the same command for each model:

    na-deploy pipeline --model M --data DIR --epochs-fp F --epochs-qat Q --timesteps TS --verify-samples V
        --seed S --out OUT/<M>

for M in torchvision:resnet18 (7x7/2 conv + max-pool stem: the pool becomes an average pool carried by a
graded node), torchvision:mobilenet_v2 (linear bottlenecks: graded nodes; a dead depthwise channel saturates,
contract C5), benchmarks/experiments/stem_builders.py:densenet_small (torchvision's DenseNet class, small) and
benchmarks/experiments/stem_builders.py:resnet18_stride2_stem (the registry's ResNet-18 with its 3x3 stride-2
stem: 4x the compute of torchvision's stem after it), all from random
initialisation (no weights can be downloaded here), noise adaptor on. Lava verifies --verify-samples test
images of each, except the stride-2 stem's 547-core net (reference only; --verify-all includes it). It prints one
table: ANN and integer SNN accuracy vs T, the Lava verify verdict, cores and chips, and each run's seconds
(report.json's timings_s total). A run folder that is already COMPLETE is reused, so an interrupted study resumes.

    nice -n 5 .venv/bin/python benchmarks/experiments/stem_comparison.py [--train 2000] [--test 500]
        [--epochs-fp 4] [--epochs-qat 3] [--timesteps 1,2,4,8] [--out runs/stem_comparison]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODELS = ("torchvision:resnet18", "benchmarks/experiments/stem_builders.py:resnet18_stride2_stem",
          "torchvision:mobilenet_v2", "benchmarks/experiments/stem_builders.py:densenet_small")
# the stride-2 stem's net needs 547 Loihi 2 cores at 64x64: one Lava process per core does not fit a 24 GB machine,
# so its row is verified only by the reference (--verify-samples 0); --verify-all runs Lava on it too
NO_LAVA = ("benchmarks/experiments/stem_builders.py:resnet18_stride2_stem",)


def run_one(model: str, data: Path, out: Path, args) -> dict | str:
    """report.json of the pipeline run of `model` (a COMPLETE run folder is reused), or the one-line reason the
    pipeline stopped."""
    if (out / "COMPLETE").is_file():
        return json.loads((out / "report.json").read_text())
    command = [str(Path(sys.executable).parent / "na-deploy"), "pipeline", "--model", model, "--data", str(data),
               "--epochs-fp", str(args.epochs_fp), "--epochs-qat", str(args.epochs_qat), "--timesteps", args.timesteps,
               "--verify-samples",
               str(0 if model in NO_LAVA and not args.verify_all else args.verify_samples),
               "--verify-timesteps", "8", "--seed", str(args.seed), "--out", str(out),
               "--force"]
    print("$ " + " ".join(command[1:]), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        print(f"{model}: the pipeline exited {done.returncode}: {last}", flush=True)
        return f"exit {done.returncode}: {last}"
    return json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--epochs-fp", type=int, default=4)
    ap.add_argument("--epochs-qat", type=int, default=3)
    ap.add_argument("--timesteps", default="1,2,4,8")
    ap.add_argument("--verify-samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify-all", action="store_true", help="Lava verify on every model (547 cores for the stride-2 "
                    "stem: more memory than 24 GB)")
    ap.add_argument("--out", default="runs/stem_comparison")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "benchmarks" / "experiments"))
    from transfer_resnet18 import write_folder

    out = Path(args.out)
    data = out / "images"
    if not (data / "val").is_dir():
        write_folder(data, args.train, args.test, 64, args.seed)
    rows = []
    for model in MODELS:
        rows.append((model, run_one(model, data, out / model.replace("/", "_").replace(":", "_"), args)))
    done = [r for _, r in rows if isinstance(r, dict)]
    if not done:
        raise SystemExit("no model finished its pipeline")
    ts = sorted(done[0]["snn_accuracy"]["integer"], key=int)
    n = args.test
    print(f"\n64x64 shapes ({args.train} train / {n} test; one test image = {100 / n:.2f} pp), FP {args.epochs_fp} + "
          f"QAT {args.epochs_qat} epochs from random init, seed {args.seed}, noise adaptor on; integer SNN:")
    print("| model | ANN | " + " | ".join(f"T={t}" for t in ts) + " | verify | cores | chips | seconds |")
    print("|---|---:|" + "---:|" * len(ts) + "---|---:|---:|---:|")
    for model, r in rows:
        if isinstance(r, str):
            print(f"| {model.split('/')[-1]} | " + " | ".join("" for _ in range(len(ts) + 1)) + f" | {r} | | | |")
            continue
        v, total = r["verify"], r["resources"]["total"]
        verdict = (f"bit-exact on {v['samples']}" if v.get("bit_exact")
                   else "not run (--verify-all)" if not v.get("samples") else f"bit_exact={v.get('bit_exact')}")
        print(f"| {model.split('/')[-1]} | {100 * r['ann_accuracy']:.1f} | "
              + " | ".join(f"{100 * r['snn_accuracy']['integer'][t]:.1f}" for t in ts)
              + f" | {verdict} | {total['cores']} | {total['chips']} | {r['timings_s']['total']:.0f} |")


if __name__ == "__main__":
    main()
