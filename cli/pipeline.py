"""`na-deploy pipeline`: the whole job (train -> quantize -> convert -> export -> verify -> accuracy vs T), or
`--compare` variants side by side, or `--from-nir` without training."""
from __future__ import annotations

from pathlib import Path

import click

from na_deploy.errors import NaDeployError

from na_deploy.cli.options import (check_folder_output, device_option, parse_timesteps, target_option,
                                   weights_options)


def _config_fields(options: dict) -> dict:
    """PipelineConfig fields: its defaults, then --preset's values, then every flag the user gave."""
    from dataclasses import fields

    from click.core import ParameterSource

    from na_deploy.pipeline.run import PipelineConfig
    from na_deploy.pipeline.presets import resolve_config

    ctx = click.get_current_context()
    given = {k: v for k, v in options.items() if k != "preset" and ctx.get_parameter_source(k)
             not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
    if "timesteps" in given:
        given["timesteps"] = tuple(parse_timesteps(given["timesteps"]))
    return resolve_config({f.name: f.default for f in fields(PipelineConfig)}, options["preset"], given)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(), default=None,
              help="npz with x_train, y_train, x_test, y_test (uint8 0-255 or float in [0,1]), or an image folder "
                   "DIR/train/<class>/*.png|jpg, DIR/val/<class>/... (streamed through a DataLoader). "
                   "Default: the embedded scikit-learn digits (8x8, 10 classes).")
@click.option("--augment", default=None, metavar="[none|cifar|imagenet]",
              help="Training augmentation (default none; the cifar10/imagenet presets set theirs): cifar = pad 4 + "
                   "random crop + flip; imagenet = RandomResizedCrop 224 + flip, evaluation resize 256 + centre "
                   "crop 224 (image folders only). Pixels stay uint8 (C4).")
@click.option("--workers", type=int, default=0, show_default=True,
              help="DataLoader worker processes for image folders / augmented data (0: the main process).")
@click.option("--num-classes", type=int, default=None, metavar="K",
              help="K, the number of classes (outputs). Default: 1 + the largest y_train label, and then every "
                   "class 0..K-1 must occur in y_train. Given, labels must be in [0, K); empty classes are allowed "
                   "(with a warning).")
@click.option("--model", default="digits_cnn", show_default=True,
              help="Network: a registry name, torchvision:NAME, package.module:builder or path/to/file.py:builder "
                   "(as `na-deploy train --model`).")
@weights_options
@click.option("--p", "p", type=int, default=2, show_default=True,
              help="Positive integer threshold of the quantized ReLU (levels 0..p); the SNN threshold is th = p*s.")
@click.option("--epochs-fp", type=int, default=30, show_default=True,
              help="Full-precision training epochs (from --weights when given; 0 with --weights: QAT starts from "
                   "the weights as they are, the paper's workflow).")
@click.option("--epochs-qat", type=int, default=20, show_default=True,
              help="Quantization-aware training epochs (from the full-precision weights).")
@click.option("--noise-range", "noise_range", type=float, default=1.0, show_default=True, metavar="W",
              help="Width W of the noise adaptor's eps ~ U(-W/2, W/2) in QAT (finite, > 0; the paper's W = 1). In "
                   "report.json's config when not 1. With --compare use the +noise=W modifier instead.")
@click.option("--timesteps", default="1,2,4,8,16,32", show_default=True, help="SNN time steps T to evaluate.")
@click.option("--verify-samples", type=int, default=100, show_default=True,
              help="Test samples checked reference vs Lava (0 skips Lava).")
@click.option("--verify-timesteps", type=int, default=8, show_default=True, help="T used for the Lava check.")
@click.option("--compare-no-noise-adaptor", is_flag=True,
              help="Also train the same net without the noise adaptor (same fp weights and seed) and report both, "
                   "like the paper's Table 1.")
@click.option("--eval-samples", type=int, default=None, help="Evaluate accuracy on the first N test samples only.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@target_option
@click.option("--out", type=click.Path(file_okay=False), default="runs/pipeline", show_default=True,
              help="Run folder; written as <out>.partial and renamed when every stage has finished.")
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out.")
@click.option("--neuron", default=None, metavar="[subtract|zero|negative|accumulate]",
              help="Neuron mode of the exported and verified net (default: subtract, report as before). Given, "
                   "the noise-adaptor checkpoint is converted in BOTH modes and report.json / report.md show "
                   "them side by side (report['neuron_modes']); the other mode's nets go to net_<mode>.*.")
@click.option("--from-nir", "from_nir", default=None, metavar="MODEL.nir",
              help="No training: import this NIR graph (ours or another framework's, see `na-deploy import`), "
                   "make it fixed point for max(--timesteps, --verify-timesteps), then Lava export, verify and "
                   "accuracy vs T on --data (required).")
@click.option("--preset", default=None, metavar="NAME",
              help="Hyperparameters from the paper's §5.1 (na_deploy/pipeline/presets.py): cifar10-resnet18, "
                   "imagenet-resnet50, "
                   "smoke; every flag you give overrides its value; report.json's config holds what ran.")
@click.option("--lr-fp", "lr_fp", type=float, default=0.1, show_default=True,
              help="Full-precision initial LR (cosine).")
@click.option("--lr-qat", "lr_qat", type=float, default=0.05, show_default=True, help="QAT initial LR (cosine).")
@click.option("--batch-size", "batch_size", type=int, default=64, show_default=True)
@click.option("--weight-decay", "weight_decay", type=float, default=5e-4, show_default=True,
              help="SGD weight decay (not on BN, biases, step sizes) for both training stages.")
@click.option("--compare", "compare", default=None, metavar="VARIANTS",
              help="Comma-separated variants trained from the same fp weights and seed, tabled side by side "
                   "instead of the single run: base na | no-na | datta, modifiers +negative +accumulate +zero "
                   "+offset +l1 +shift, e.g. na,no-na,na+negative,na+offset,datta,datta+l1 (see compare.md).")
@click.option("--compare-l1", "compare_l1", type=float, default=0.5, show_default=True, metavar="LAMBDA",
              help="The L1 activation penalty of the +l1 variants (quantize --l1-sparsity).")
@click.option("--compare-offset-steps", "compare_offset_steps", type=int, default=2, show_default=True,
              metavar="RHO", help="First-stage steps of the +offset variants (two-stage offset calibration).")
@click.option("--seeds", "seeds", default=None, metavar="S1,S2,...",
              help="Run once per seed (every arm / variant of a seed from that seed's fp weights) into "
                   "OUT/seed-<s>/, then OUT/report.json with per_seed, stats (mean, std, 95 % t interval) and "
                   "the paired effects. The same command resumes: finished seeds are reused. Replaces --seed.")
@click.option("--threads", "threads", type=int, default=None, metavar="N",
              help="torch intra-op threads (torch.set_num_threads); results depend on it. Recorded in "
                   "report.json's environment [default: torch's default].")
def pipeline(target_name, out, force, compare, compare_l1, compare_offset_steps, seeds, threads, **options):
    """Train -> quantize (noise adaptor) -> convert -> fixed point -> Lava export -> verify -> accuracy vs T
    (with --from-nir: import -> fixed point -> Lava export -> verify -> accuracy vs T).

    Writes OUT/{fp.ckpt, qat.ckpt, net.nad.h5, net.float.nad.h5, lava/, report.json, report.md, *.png,
    COMPLETE} and prints the summary table. Exit 1 if Lava and the reference simulator disagree anywhere.
    """
    from na_deploy.hw_targets import get_target
    from na_deploy.pipeline.environment import set_threads
    from na_deploy.pipeline.run import PipelineConfig, format_summary, run_pipeline

    data, from_nir = options["data"], options["from_nir"]
    if data is not None and not Path(data).exists():
        raise NaDeployError(f"--data {data}: no such file or folder")
    if from_nir is not None and not Path(from_nir).is_file():
        raise NaDeployError(f"--from-nir {from_nir}: no such file")
    check_folder_output(out, [data, from_nir, options["weights"]])
    variants = None
    if compare is not None:
        from na_deploy.pipeline.variants import parse_variants
        variants = parse_variants(compare, compare_l1, compare_offset_steps)  # before anything is written
        clash = [f for f, v in (("--from-nir", from_nir), ("--neuron", options["neuron"]),
                                ("--compare-no-noise-adaptor", options["compare_no_noise_adaptor"]),
                                ("--noise-range", options["noise_range"] != 1.0)) if v]
        if clash:
            raise NaDeployError(f"--compare: cannot be combined with {clash[0]} (each variant names its own "
                                "training and neuron mode)")
    seed_list = _seed_list(seeds, from_nir)
    set_threads(threads)
    cfg = PipelineConfig(**_config_fields(options))
    cfg.validate()
    target = get_target(target_name)
    if seed_list is not None:
        _run_seeds(cfg, seed_list, variants, target, out, force)
        return
    if variants is not None:
        _run_compare(cfg, variants, target, out, force)
        return
    report = run_pipeline(cfg, target, out, force=force, log=lambda m: click.echo(m, err=True))
    click.echo(format_summary(report))
    click.echo(f"run folder: {out} (report.json, report.md, plots)")
    if report["verify"]["samples"] and not report["verify"]["bit_exact"]:
        raise SystemExit(1)


def _run_compare(cfg, variants, target, out, force) -> None:
    """`pipeline --compare`: the variant tables (compare.md); exit 1 if any verified variant is not bit-exact."""
    from na_deploy.pipeline.compare import run_compare

    comp = run_compare(cfg, variants, target, out, force=force, log=lambda m: click.echo(m, err=True))
    click.echo((Path(out) / "compare.md").read_text())
    click.echo(f"run folder: {out} (compare.md, compare.json, compare_accuracy.png)")
    if any(r["verify"]["bit_exact"] is False for r in comp["variants"].values()):
        raise SystemExit(1)


def _seed_list(seeds, from_nir):
    """--seeds parsed (None when not given); refused with --from-nir (nothing is trained)."""
    if seeds is None:
        return None
    from na_deploy.pipeline.seeds import parse_seeds

    if from_nir is not None:
        raise NaDeployError("--seeds: cannot be combined with --from-nir (no training, nothing depends on a seed)")
    return parse_seeds(seeds)


def _run_seeds(cfg, seeds, variants, target, out, force) -> None:
    """`pipeline --seeds`: one run per seed, then the statistics; exit 1 naming every seed not bit-exact."""
    from na_deploy.pipeline.seeds import failed_verifies, run_seeds
    from na_deploy.pipeline.seeds_report import seeds_tables

    report = run_seeds(cfg, seeds, target, out, force=force, log=lambda m: click.echo(m, err=True),
                       variants=variants)
    click.echo("\n".join(seeds_tables(report)))
    click.echo(f"run folder: {out} (report.json, report.md, accuracy_vs_T.png; seed-<s>/ per seed)")
    bad = failed_verifies(report)
    if bad:
        click.echo(f"not bit-exact: {', '.join(bad)}", err=True)
        raise SystemExit(1)
