"""The whole job in one call: full-precision training -> QAT with the noise adaptor -> convert -> fixed point +
fit check -> Lava export -> verify (reference vs backend, per layer) -> accuracy vs T -> report + plots.

`run_pipeline(config, target, out)` builds the run in `<out>.partial/` and renames it to `<out>` only when
every stage finished, so a failed run never looks finished (`<out>/COMPLETE` exists only in finished runs).
The target object (e.g. `hw_targets.loihi2.TARGET`) is passed in: the core never imports a target.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .atomic import atomic_write_text
from .errors import NaDeployError

DEFAULT_TIMESTEPS = (1, 2, 4, 8, 16, 32)


@dataclass
class PipelineConfig:
    data: Optional[str] = None  # None: embedded digits
    model: str = "digits_cnn"
    p: int = 2
    epochs_fp: int = 30
    epochs_qat: int = 20
    lr_fp: float = 0.1
    lr_qat: float = 0.05
    batch_size: int = 64
    timesteps: tuple = DEFAULT_TIMESTEPS
    verify_samples: int = 100
    verify_timesteps: int = 8
    compare_no_noise_adaptor: bool = False
    seed: int = 0
    device: Optional[str] = None
    eval_samples: Optional[int] = None  # None: the whole test split

    def validate(self) -> None:
        if self.p < 1:
            raise NaDeployError(f"--p must be a positive integer (the paper's p), got {self.p}")
        if self.epochs_fp < 1 or self.epochs_qat < 1:
            raise NaDeployError(f"--epochs-fp and --epochs-qat must be >= 1, got {self.epochs_fp}, {self.epochs_qat}")
        if not self.timesteps or min(self.timesteps) < 1:
            raise NaDeployError(f"--timesteps must be positive integers, got {list(self.timesteps)}")
        if self.verify_samples < 0:
            raise NaDeployError(f"--verify-samples must be >= 0, got {self.verify_samples}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise NaDeployError(f"--eval-samples must be >= 1, got {self.eval_samples}")
        if self.verify_timesteps < 1:
            raise NaDeployError(f"--verify-timesteps must be >= 1, got {self.verify_timesteps}")


class _Timer:
    """`with timer(stage):` adds the stage's wall seconds to `timer.timings[stage]`."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - t0, 3)


def prepare_out_dir(out: str | Path, force: bool = False) -> tuple[Path, Path]:
    """Check `out` can be written; return (final, partial) paths. Refuses an existing run unless `force`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NaDeployError(f"--out {out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise NaDeployError(f"--out {out}: directory exists and is not empty; choose another --out or pass --force")
    partial = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
    except OSError as e:
        raise NaDeployError(f"--out {out}: cannot create the run folder ({e.strerror or e})") from None
    return out, partial


def _accuracy_arm(qat_ckpt, data, cfg: PipelineConfig, target, run_dir: Path, tag: str, timer: _Timer,
                  log: Callable) -> dict:
    """Convert one QAT checkpoint, write its nets, and measure ANN / float SNN / integer SNN accuracy vs T."""
    from .convert import convert_checkpoint
    from .evaluate import evaluate_nets
    from .target import require_fit

    x, y = data.x_test, data.y_test
    if cfg.eval_samples:
        x, y = x[: cfg.eval_samples], y[: cfg.eval_samples]
    with timer(f"convert{tag}"):
        fnet = convert_checkpoint(qat_ckpt)
        inet = target.to_fixed_point(fnet, max_timesteps=max(*cfg.timesteps, cfg.verify_timesteps))
        require_fit(target, inet)
        fnet.save(run_dir / f"net{tag}.float.nad.h5")
        inet.save(run_dir / f"net{tag}.nad.h5")
    Ts = sorted(set(int(t) for t in cfg.timesteps))
    with timer(f"evaluate{tag}"):
        res = evaluate_nets(fnet, inet, target, x, y, Ts, device=cfg.device, progress=False, keep_traces=True)
    acc = res["snn_accuracy"]
    log(f"[{'no noise adaptor' if tag else 'noise adaptor'}] ANN {res['ann_accuracy']:.4f} | "
        + " ".join(f"T={T}: float {acc['float'][str(T)]:.4f} int {acc['integer'][str(T)]:.4f}" for T in Ts))
    res["_nets"], res["_x"], res["_traces"] = (fnet, inet), x, res.pop("traces")
    res["_noise"] = res["occasional_noise"].get("integer")
    res["occasional_noise"] = {k: v.to_dict() for k, v in res["occasional_noise"].items()}
    return res


def run_pipeline(cfg: PipelineConfig, target, out: str | Path, force: bool = False,
                 log: Callable[[str], None] = print) -> dict:
    """Run every stage; return the report dict (also written as report.json / report.md)."""
    from .data import load_dataset
    from .plots import plot_accuracy_vs_t, plot_layer_activity, plot_occasional_noise
    from .train import train_full_precision, train_qat

    cfg.validate()
    timer = _Timer()
    with timer("load_data"):
        data = load_dataset(cfg.data, seed=cfg.seed)  # validates --data before any folder is made
    if cfg.verify_samples > len(data.x_test):
        raise NaDeployError(f"--verify-samples {cfg.verify_samples} conflicts with the data: its test split has "
                            f"{len(data.x_test)} samples")
    final, run_dir = prepare_out_dir(out, force)
    t_start = time.perf_counter()
    try:
        log(f"[pipeline] data {data.name}: {len(data.x_train)} train / {len(data.x_test)} test, "
            f"input {tuple(data.x_train.shape[1:])}, {data.num_classes} classes; run folder {final}")
        with timer("train_fp"):
            train_full_precision(data, cfg.model, epochs=cfg.epochs_fp, lr=cfg.lr_fp, seed=cfg.seed,
                                      device=cfg.device, batch_size=cfg.batch_size, out=run_dir / "fp.ckpt")
        with timer("train_qat"):
            train_qat(data, run_dir / "fp.ckpt", p=cfg.p, noise_adaptor=True, epochs=cfg.epochs_qat,
                            lr=cfg.lr_qat, seed=cfg.seed, device=cfg.device, batch_size=cfg.batch_size,
                            out=run_dir / "qat.ckpt")
        arm = _accuracy_arm(run_dir / "qat.ckpt", data, cfg, target, run_dir, "", timer, log)
        fnet, inet = arm.pop("_nets")
        traces, x_eval, noise = arm.pop("_traces"), arm.pop("_x"), arm.pop("_noise")
        report: dict = dict(arm)

        if hasattr(target, "export"):
            with timer("export_lava"):
                target.export(inet, run_dir / "lava", timesteps=cfg.verify_timesteps,
                              source=f"{cfg.model} (na-deploy pipeline)")

        Tv = cfg.verify_timesteps
        n_ver = cfg.verify_samples
        verify = {"samples": n_ver, "timesteps": Tv, "bit_exact": None, "mismatches": None, "layers": []}
        if n_ver > 0:
            with timer("verify_lava"):
                vr = target.verify(inet, data.x_test[:n_ver], Tv).to_dict()
            verify.update(vr)
            verify["bit_exact"] = bool(vr["equal"])
            verify["mismatches"] = int(vr["mismatching_samples"])
            log(f"[verify] {n_ver} samples at T={Tv}: " + (
                "bit-exact (all per-layer spike counts and readouts equal)" if verify["bit_exact"]
                else f"{verify['mismatches']} MISMATCHING samples; first: {vr['first_mismatch']}"))
        report["verify"] = verify

        Tr = max(t for t in traces)
        resources = None
        if hasattr(target, "resource_report"):
            with timer("resources"):
                resources = target.resource_report(inet, traces[Tr], inputs=x_eval)
            report["resources"] = resources

        if cfg.compare_no_noise_adaptor:
            with timer("train_qat_no_noise_adaptor"):
                train_qat(data, run_dir / "fp.ckpt", p=cfg.p, noise_adaptor=False, epochs=cfg.epochs_qat,
                          lr=cfg.lr_qat, seed=cfg.seed, device=cfg.device, batch_size=cfg.batch_size,
                          out=run_dir / "qat_no_na.ckpt")
            arm2 = _accuracy_arm(run_dir / "qat_no_na.ckpt", data, cfg, target, run_dir, "_no_na", timer, log)
            for k in ("_nets", "_traces", "_x", "_noise"):
                arm2.pop(k)
            report["no_noise_adaptor"] = arm2

        with timer("plots"):
            arms = {"with noise adaptor": {"ann": report["ann_accuracy"], **report["snn_accuracy"]}}
            if "no_noise_adaptor" in report:
                nn_ = report["no_noise_adaptor"]
                arms["without noise adaptor"] = {"ann": nn_["ann_accuracy"], **nn_["snn_accuracy"]}
            plot_accuracy_vs_t(arms, run_dir / "accuracy_vs_T.png",
                               title=f"{cfg.model} on {data.name}, p={cfg.p}")
            if resources is not None:
                plot_layer_activity(resources["nodes"], run_dir / "layer_activity.png",
                                    title=f"Spiking activity per layer (integer SNN, T={Tr})")
            if noise is not None:
                plot_occasional_noise({f"T={k * cfg.p} (k={k})": {r.node: r.share for r in rows}
                                       for k, rows in noise.rows.items()}, run_dir / "occasional_noise.png")

        report["config"] = {**asdict(cfg), "timesteps": list(cfg.timesteps), "target": target.name}
        report["data"] = {"name": data.name, "fingerprint": data.fingerprint, "train": int(len(data.x_train)),
                          "test": int(len(data.x_test)), "evaluated": int(len(x_eval))}
        report["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - t_start, 3)}
        atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2, sort_keys=True, default=_json))
        atomic_write_text(run_dir / "report.md", format_report_md(report))
        atomic_write_text(run_dir / "COMPLETE", "finished\n")
    except BaseException:
        log(f"[pipeline] failed; partial results left in {run_dir} (not marked complete)")
        raise
    if final.exists():
        shutil.rmtree(final)
    run_dir.rename(final)
    return report


def _json(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def format_summary(report: dict) -> str:
    """The summary table printed at the end (paper Table 1 layout: ANN then SNN at each T)."""
    Ts = sorted(report["snn_accuracy"]["integer"], key=int)
    head = f"{'setting':<24}{'ANN':>8}" + "".join(f"{'T=' + t:>8}" for t in Ts)
    lines = [head]

    def row(label, arm, kind):
        return f"{label:<24}{100 * arm['ann_accuracy']:>8.2f}" + "".join(
            f"{100 * arm['snn_accuracy'][kind][t]:>8.2f}" for t in Ts)

    lines.append(row("w/ NA, integer SNN", report, "integer"))
    lines.append(row("w/ NA, float SNN", report, "float"))
    if "no_noise_adaptor" in report:
        lines.append(row("w/o NA, integer SNN", report["no_noise_adaptor"], "integer"))
        lines.append(row("w/o NA, float SNN", report["no_noise_adaptor"], "float"))
    v = report["verify"]
    if v["samples"]:
        lines.append(f"verify: {v['samples']} samples at T={v['timesteps']}: "
                     + ("BIT-EXACT" if v["bit_exact"] else f"{v['mismatches']} mismatching samples"))
    return "\n".join(lines)


def format_report_md(report: dict) -> str:
    c = report.get("config", {})
    out = [f"# na-deploy run: {c.get('model')} on {report.get('data', {}).get('name')}, p={c.get('p')}", "",
           "Accuracies in % on the test split (ANN = quantized ANN in eval mode; SNN = integrate-and-fire, "
           "pre-charge th/2, reset by subtraction).", "", "```", format_summary(report), "```", ""]
    v = report["verify"]
    if v.get("layers"):
        out += [f"## Verify: reference simulator vs Lava ({v['samples']} samples, T={v['timesteps']})", "",
                "| node | spikes (reference) | spikes (Lava) | equal |", "|---|---:|---:|:---:|"]
        out += [f"| {r['node']} | {r['reference']} | {r['lava']} | {'yes' if r['equal'] else 'NO'} |"
                for r in v["layers"]]
        out += ["", f"Readout potentials equal: {'yes' if v.get('readout_equal') else 'NO'}; "
                f"mismatching samples: {v['mismatches']}.", ""]
        if v.get("first_mismatch"):
            out += [f"First mismatch: {v['first_mismatch']}", ""]
        if v.get("seconds"):
            s = v["seconds"]
            out += [f"Seconds per sample: reference {s['reference_per_sample']:.5f}, Lava {s['lava_per_sample']:.4f} "
                    f"(Lava / reference = {s['lava_over_reference']:.0f}x).", ""]
    if report.get("occasional_noise", {}).get("integer"):
        out += ["## Occasional noise, integer SNN (share of neurons whose spike count != k x ANN level at T = k*p)", ""]
        for k, rows in report["occasional_noise"]["integer"]["by_k"].items():
            out.append(f"- k={k}: " + ", ".join(f"{r['node']} {100 * r['share']:.1f}%" for r in rows))
        out.append("")
    if report.get("resources"):
        r = report["resources"]
        t = r["total"]
        out += ["## Loihi 2 resources (estimate)", "",
                f"{t['neurons']} neurons, {t['synapses']} synapses, {t['cores']} cores ({t['chips']} chip(s)).", ""]
        if "per_inference" in r:
            p = r["per_inference"]
            out += [f"Per inference at T={p['timesteps']}: {p['spikes']:.0f} spikes, {p['synops']:.0f} synaptic ops, "
                    f"energy ~{p['energy_uJ']:.3f} uJ ({r['energy_model']['source']}).", ""]
    out += ["## Timings (s)", "", "| stage | seconds |", "|---|---:|"]
    out += [f"| {k} | {v:.2f} |" for k, v in report.get("timings_s", {}).items()]
    out += ["", "Plots: accuracy_vs_T.png, layer_activity.png, occasional_noise.png."]
    return "\n".join(out) + "\n"
