"""Which torchvision classification networks go through the pipeline (issue 19), as a markdown table.

For every builder of `torchvision.models.list_models(module=torchvision.models)` (or --only NAME,...): build it
with num_classes 10, weights=None, at --size x --size RGB inputs; `quantize_model` (p=2; ReLU/ReLU6 ->
QuantReLU, max-pool -> average pool), calibrate the step sizes on random images; `to_floatnet` with the float64
self-check; Loihi 2 fixed point for T = 8 and the fit check; cores / chips from `target.resource_report`; with
--lava, reference == Lava on 1 sample (slow). A row gives the first stage that refused and its one-line reason.
Random weights: this measures convertibility, not accuracy.

    .venv/bin/python benchmarks/experiments/torchvision_compat.py --size 32 [--only resnet18,vgg11_bn] [--lava]
"""
from __future__ import annotations

import argparse
import time

import torch


def row(name: str, size: int, lava: bool, max_params: float) -> dict:
    """One model's result: stage reached, reason, cores, chips, seconds."""
    import torchvision.models as tvm

    from na_deploy.convert import to_floatnet
    from na_deploy.hw_targets import get_target
    from na_deploy.training.model_spec import build_external
    from na_deploy.training.surgery import calibrate_step_sizes, quantize_model

    out = {"model": name, "converts": "", "self_check": "", "fits": "", "lava": "", "cores": "", "chips": "",
           "reason": ""}
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
        out["self_check"] = "yes"
        stage = "fixed point"
        target = get_target("loihi2")
        fixed = target.to_fixed_point(net, 8)
        bad = target.check_fit(fixed, 8)
        out["fits"] = "yes" if not bad else f"no ({len(bad)} violations)"
        total = target.resource_report(fixed)["total"]
        out["cores"], out["chips"] = total["cores"], total["chips"]
        if lava and not bad:
            stage = "lava"
            from na_deploy.verify.bit_exact import verify
            x = torch.randint(0, 256, (1, 3, size, size)).numpy().astype("uint8")
            out["lava"] = "yes" if verify(fixed, x, 8, target, target.backend("lava", fixed)).equal else "NO"
    except Exception as e:  # a table row per model: the stage and the one-line reason
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        out["reason"] = f"{stage}: {type(e).__name__}: {msg}"[:300]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    del tvm
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--only", default=None, help="comma-separated builder names")
    ap.add_argument("--lava", action="store_true", help="also reference == Lava on 1 sample (slow)")
    ap.add_argument("--max-params", type=float, default=150e6, help="skip larger models")
    args = ap.parse_args()
    import torchvision.models as tvm

    names = args.only.split(",") if args.only else tvm.list_models(module=tvm)
    cols = ["model", "converts", "self_check", "fits", "lava", "cores", "chips", "reason"]
    print(f"| {' | '.join(cols)} |\n|{'---|' * len(cols)}", flush=True)
    for name in names:
        r = row(name, args.size, args.lava, args.max_params)
        print("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
