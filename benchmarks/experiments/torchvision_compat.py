"""Which torchvision classification networks go through the pipeline (issue 19), as a markdown table.

For every builder of `torchvision.models.list_models(module=torchvision.models)` (or --only NAME,...): build it with
num_classes 10, weights=None, at --size x --size RGB inputs; `quantize_model` (p=2; ReLU/ReLU6/clamp -> QuantReLU,
max-pool -> average pool), calibrate the step sizes on random images; `to_floatnet`, then the float64 self-check
against the quantized torch model; for each of --targets (default loihi2) the fixed point for T = 8, the fit check
and the cores / chips from `target.resource_report`; with --lava, reference == Lava on 1 sample (slow;
--lava-max-synapses N / --lava-max-cores N skip it, saying so, for a net above N synapses / cores). A row gives the
first stage that refused and its one-line reason. Random weights: this measures convertibility, not accuracy.

    .venv/bin/python benchmarks/experiments/torchvision_compat.py --size 32 [--only resnet18,vgg11_bn] [--lava]
        [--lava-max-synapses 2000000] [--lava-max-cores 100] [--targets loihi2] [--out docs/compat.md]

--out writes the table as a markdown page (atomically), with the one-line command that regenerates it above
the table (docs/compat.md is made this way).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
FIT_T = 8


def _reason(stage: str, e: Exception) -> str:
    msg = (str(e).splitlines() or [type(e).__name__])[0]
    return f"{stage}: {type(e).__name__}: {msg}"


def _fits(net, target_names: list[str], out: dict) -> tuple:
    """Fixed point, fit check and resources per target; (the first target's fixed net and target, its synapses,
    whether it fits)."""
    from na_deploy.hw_targets import get_target

    first = None
    for name in target_names:
        target = get_target(name)
        fixed = target.to_fixed_point(net, FIT_T)
        bad = target.check_fit(fixed, FIT_T)
        total = target.resource_report(fixed)["total"]
        out[f"fits {name}"] = "yes" if not bad else f"no ({len(bad)} violations: {str(bad[0])[:120]})"
        out[f"cores {name}"], out[f"chips {name}"] = total["cores"], total["chips"]
        if first is None:
            first = (fixed, target, int(total["synapses"]), not bad)
    return first


def row(name: str, size: int, lava: bool, max_params: float, targets: list[str],
        lava_max_synapses: float = float("inf"), lava_max_cores: float = float("inf")) -> dict:
    """One model's result: the stages it passed, its resources per target, the reason it stopped, seconds."""
    from na_deploy.convert import to_floatnet
    from na_deploy.training.model_spec import build_external
    from na_deploy.training.surgery import calibrate_step_sizes, quantize_model

    out = {"model": name, "converts": "", "self-check": "", "lava": "", "reason": ""}
    t0 = time.perf_counter()
    stage = "build"
    try:
        model = build_external(f"torchvision:{name}", 3, 10, size).eval()
        params = sum(p.numel() for p in model.parameters())
        if params > max_params:
            out["reason"] = f"skipped: {params / 1e6:.0f} M parameters (> --max-params)"
            return out
        stage = "quantize"
        torch.manual_seed(0)
        q = quantize_model(model, 2, True).eval()
        calibrate_step_sizes(q, torch.rand(4, 3, size, size))
        stage = "convert"
        net = to_floatnet(q, (3, size, size), 1.0 / 255, self_check=False, name=name)
        out["converts"] = "yes"
        stage = "self-check"
        from na_deploy.convert.api import check_against_torch
        check_against_torch(net, q)
        out["self-check"] = "yes"
        stage = "fixed point"
        fixed, target, synapses, fits = _fits(net, targets, out)
        cores = int(out.get(f"cores {targets[0]}") or 0)
        if lava and fits and synapses > lava_max_synapses:
            out["lava"] = f"skipped: {synapses} synapses > --lava-max-synapses {lava_max_synapses:.0f}"
        elif lava and fits and cores > lava_max_cores:  # about one Lava process per core: memory
            out["lava"] = f"skipped: {cores} cores > --lava-max-cores {lava_max_cores:.0f}"
        elif lava and fits:
            stage = "lava"
            from na_deploy.verify.bit_exact import verify
            x = torch.randint(0, 256, (1, 3, size, size), generator=torch.Generator().manual_seed(0))
            out["lava"] = ("yes" if verify(fixed, x.numpy().astype("uint8"), FIT_T, target,
                                           target.backend("lava", fixed)).equal else "NO")
    except Exception as e:  # a table row per model: the stage and the one-line reason
        out["reason"] = _reason(stage, e)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def columns(targets: list[str]) -> list[str]:
    return (["model", "converts", "self-check"] + [f"{k} {t}" for t in targets for k in ("fits", "cores", "chips")]
            + ["lava", "seconds", "reason"])


def format_row(r: dict, cols: list[str]) -> str:
    return "| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |"


def command_line(argv: list[str]) -> str:
    """The one-line command that regenerates the table, from the repository root."""
    script = os.path.relpath(Path(argv[0]).resolve(), REPO)
    return "nice -n 10 .venv/bin/python " + " ".join(shlex.quote(a) for a in [script, *argv[1:]])


def page(rows: list[dict], cols: list[str], args, command: str) -> str:
    """docs/compat.md: what the table measures, the command that regenerates it, the table."""
    n_ok = sum(1 for r in rows if r.get("self-check") == "yes")
    lines = [
        "# torchvision compatibility",
        "",
        f"Which of torchvision's classification builders go through `quantize` → `convert` (with the float64 "
        f"self-check) → Loihi 2 fixed point and fit check (T = {FIT_T})"
        + (" → reference ≡ Lava on 1 sample" if args.lava else "") + f", at {args.size}×{args.size} RGB "
        "inputs, 10 classes, random weights (convertibility, not accuracy). A row that stops gives the stage "
        "and its one-line reason. Made by `benchmarks/experiments/torchvision_compat.py` "
        "(issue 19); regenerate it with:",
        "",
        "```",
        command,
        "```",
        "",
        f"{n_ok} of {len(rows)} pass the self-check. Columns: converts = `to_floatnet` succeeded; self-check = "
        "the float SNN equals the quantized torch model in float64; fits = the fixed-point net passes the "
        "target's fit check (cores and chips from its resource report); lava = the reference simulator and "
        "Lava agree bit-exactly on 1 sample; seconds = wall time of the row.",
        "",
        f"| {' | '.join(cols)} |",
        f"|{'---|' * len(cols)}",
        *[format_row(r, cols) for r in rows],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--only", default=None, help="comma-separated builder names")
    ap.add_argument("--lava", action="store_true", help="also reference == Lava on 1 sample (slow)")
    ap.add_argument("--lava-max-synapses", type=float, default=float("inf"),
                    help="skip the Lava run (saying so) for a net above this many synapses")
    ap.add_argument("--lava-max-cores", type=float, default=float("inf"),
                    help="skip the Lava run (saying so) for a net above this many cores (about one Lava process "
                         "each: memory)")
    ap.add_argument("--targets", default="loihi2", help="comma-separated targets: fit check, cores and chips each")
    ap.add_argument("--max-params", type=float, default=150e6, help="skip larger models")
    ap.add_argument("--out", default=None, help="also write the table as a markdown page (e.g. docs/compat.md)")
    args = ap.parse_args(argv[1:])
    import torchvision.models as tvm

    from na_deploy.hw_targets import get_target

    targets = [t for t in args.targets.split(",") if t]
    for t in targets:
        get_target(t)  # an unknown target: one line before any model is built
    names = args.only.split(",") if args.only else tvm.list_models(module=tvm)
    cols = columns(targets)
    print(f"| {' | '.join(cols)} |\n|{'---|' * len(cols)}", flush=True)
    rows = []
    for name in names:
        rows.append(row(name, args.size, args.lava, args.max_params, targets, args.lava_max_synapses,
                        args.lava_max_cores))
        print(format_row(rows[-1], cols), flush=True)
    if args.out:
        from na_deploy.atomic import atomic_write_text

        atomic_write_text(args.out, page(rows, cols, args, command_line(argv)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
