"""The whole job in one call: full-precision training -> QAT with the noise adaptor -> convert -> fixed point +
fit check -> Lava export -> verify (reference vs backend, per layer) -> accuracy vs T -> report + plots.
`run_pipeline(config, target, out)` builds the run in `<out>.partial/` and renames it to `<out>` only when
every stage finished, so a failed run never looks finished (`<out>/COMPLETE` exists only in finished runs).
The target object (e.g. `hw_targets.loihi2.TARGET`) is passed in: the core never imports a target. It exports and
verifies through its backend (`target.backend()`, or the `backend` given) and `na_deploy.verify.bit_exact` (C6).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from na_deploy.evaluate.accuracy import AccuracyResult, accuracy_vs_timesteps
from na_deploy.atomic import atomic_write_text
from na_deploy.checks import check_p, check_timesteps
from na_deploy.errors import ExportNotSupported, NaDeployError
from na_deploy.ir import FloatNet, IntNet
from na_deploy.evaluate.occasional_noise import NoiseReport, format_noise_md
from na_deploy.pipeline.environment import run_environment
from na_deploy.pipeline.run_folder import StageTimer, run_folder
from na_deploy.pipeline.neuron_modes import ann_of_subtract, format_neuron_modes, mode_summary
from na_deploy.pipeline.verify_skipped import backend_or_reason, skipped_md, skipped_summary, verify_skipped
from na_deploy.protocols import Backend, Target, Trace, require_fit
from na_deploy.verify.provenance import save_net_pair

DEFAULT_TIMESTEPS = (1, 2, 4, 8, 16, 32)
MAX_PIPELINE_T = 2 ** 23 - 1  # a 24-bit signed spike count (Loihi 2's state) bounds T


@dataclass
class PipelineConfig:
    """Every option of `na-deploy pipeline` (recorded in report.json's "config")."""

    data: Optional[str] = None  # None: embedded digits
    num_classes: Optional[int] = None  # None: 1 + the largest y_train label, every class present (data.check_labels)
    model: str = "digits_cnn"
    p: int = 2
    epochs_fp: int = 30
    epochs_qat: int = 20
    lr_fp: float = 0.1
    lr_qat: float = 0.05
    batch_size: int = 64
    weight_decay: float = 5e-4
    timesteps: tuple = DEFAULT_TIMESTEPS
    verify_samples: int = 100
    verify_timesteps: int = 8
    compare_no_noise_adaptor: bool = False
    seed: int = 0
    device: Optional[str] = None
    eval_samples: Optional[int] = None  # None: the whole test split
    neuron: Optional[str] = None  # None: subtract, report as before; a mode: that mode + both modes side by side
    from_nir: Optional[str] = None  # a NIR graph: no training; import -> fixed point -> export -> verify -> T
    preset: Optional[str] = None  # na_deploy.pipeline.presets: the values above came from it unless a flag was given
    augment: Optional[str] = None  # training augmentation (na_deploy.data.transforms): None/none, cifar, imagenet
    workers: int = 0  # DataLoader worker processes for folder / augmented data (0: the main process)
    noise_range: float = 1.0  # W of the noise adaptor, eps ~ U(-W/2, W/2) (the paper's 1; in config when not 1)
    weights: Optional[str] = None  # full-precision state_dict to start from (fp_start; config: + weights_sha256)
    reset_head: bool = False  # with weights: re-initialise a final classifier of another class count

    def validate(self) -> None:
        """One-line NaDeployError naming the option for any value no stage can use (p and T: `checks`' rules)."""
        try:
            check_p(self.p)
        except NaDeployError:
            raise NaDeployError(f"--p must be a positive integer (the paper's p), got {self.p}") from None
        from na_deploy.training.quantizer import check_noise_range

        check_noise_range(self.noise_range)
        if self.epochs_fp < (0 if self.weights is not None else 1) or self.epochs_qat < 1:
            raise NaDeployError(f"--epochs-fp and --epochs-qat must be >= 1 (--epochs-fp 0 only with --weights), "
                                f"got {self.epochs_fp}, {self.epochs_qat}")
        try:
            check_timesteps(self.timesteps)
        except NaDeployError:
            raise NaDeployError(f"--timesteps must be positive integers, got {list(self.timesteps)}") from None
        for flag, ts in (("--timesteps", self.timesteps), ("--verify-timesteps", (self.verify_timesteps,))):
            if max(ts) > MAX_PIPELINE_T:
                raise NaDeployError(f"{flag}: T = {max(ts)} exceeds 2**23-1 = {MAX_PIPELINE_T} (a 24-bit signed "
                                    "spike count); allowed: 1..8388607")
        for flag, v, lo in (("--verify-samples", self.verify_samples, 0),
                            ("--verify-timesteps", self.verify_timesteps, 1),
                            ("--eval-samples", 1 if self.eval_samples is None else self.eval_samples, 1)):
            if v < lo:
                raise NaDeployError(f"{flag} must be >= {lo}, got {v}")
        m = ("subtract", "zero", "negative", "accumulate")  # convert.neuron_modes.NEURON_MODES
        if self.neuron is not None and self.neuron not in m:
            raise NaDeployError(f"--neuron {self.neuron}: unknown neuron mode; allowed: {', '.join(m)}")
        if self.from_nir is not None and (self.data is None or self.neuron or self.compare_no_noise_adaptor):
            raise NaDeployError("--from-nir: needs --data (no training; no --neuron, --compare-no-noise-adaptor)")
        if self.reset_head and self.weights is None:
            raise NaDeployError("--reset-head: needs --weights FILE (it re-initialises that file's classifier)")
        if self.from_nir is not None and self.weights is not None:
            raise NaDeployError("--weights: cannot be combined with --from-nir (no training, no torch model)")


@dataclass
class ArmResult:
    """One accuracy arm (a QAT checkpoint, with or without the noise adaptor), converted and measured."""

    fnet: FloatNet
    inet: IntNet
    x: np.ndarray  # the test inputs it was evaluated on (a streamed folder: its first 256, for the resource report)
    accuracy: AccuracyResult

    @property
    def traces(self) -> dict[int, Trace]:
        """The integer reference Trace of the first `accuracy.KEEP_TRACES` samples at every evaluated T."""
        return self.accuracy.sample_traces

    @property
    def noise(self) -> Optional[NoiseReport]:
        """Occasional noise of the integer SNN (None when no T is k*p for every layer's p)."""
        return self.accuracy.noise.get("integer")

    def to_report(self) -> dict:
        """The arm's part of report.json (accuracies, agreement, firing rates, occasional noise)."""
        return self.accuracy.to_dict()


def _train_qat(cfg: PipelineConfig, data, run_dir: Path, noise_adaptor: bool, out_name: str) -> None:
    """QAT from the run's fp.ckpt (same fp weights and seed for both arms) -> run_dir / out_name."""
    from na_deploy.training.loop import train_qat

    train_qat(data, run_dir / "fp.ckpt", p=cfg.p, noise_adaptor=noise_adaptor, epochs=cfg.epochs_qat,
              lr=cfg.lr_qat, seed=cfg.seed, device=cfg.device, batch_size=cfg.batch_size, out=run_dir / out_name,
              weight_decay=cfg.weight_decay, noise_range=cfg.noise_range)


def _accuracy_arm(qat_ckpt: Path, data, cfg: PipelineConfig, target: Target, run_dir: Path, tag: str,
                  timer: StageTimer, log: Callable, neuron: str = "subtract") -> ArmResult:
    """Convert one QAT checkpoint in mode `neuron`, write its nets (with their provenance records, exactly as
    `na-deploy convert` does), and measure ANN / float SNN / integer SNN accuracy vs T."""
    from na_deploy.convert import convert_checkpoint

    from na_deploy.data.loaders import eval_inputs, first_test_images

    x, y, n = eval_inputs(data, cfg.eval_samples)  # a streamed folder: a factory of batches (bounded memory)
    with timer(f"convert{tag}"):
        fnet = convert_checkpoint(qat_ckpt, neuron=neuron)
        inet = target.to_fixed_point(fnet, max_timesteps=max(*cfg.timesteps, cfg.verify_timesteps))
        require_fit(target, inet)
        save_net_pair(fnet, inet, run_dir / f"net{tag}.float.nad.h5", run_dir / f"net{tag}.nad.h5")  # as convert
    for node, channels in inet.meta.get("saturated_channels", {}).items():  # contract C5, saturation
        log(f"[fixed point] node {node}: output channel(s) {channels} saturate (their weights exceed the mantissa "
            f"range at the node's scale; recorded in net{tag}.nad.h5's meta)")
    timesteps = check_timesteps(cfg.timesteps)
    with timer(f"evaluate{tag}"):
        acc = accuracy_vs_timesteps(fnet, inet, target, x, y, timesteps, device=cfg.device, progress=False, total=n)
        if neuron != "subtract":
            ann_of_subtract(acc, qat_ckpt, x, y, cfg.device)
    log(f"[{'no noise adaptor' if tag.startswith('_no_na') else 'noise adaptor'}"
        f"{'' if cfg.neuron is None else ', ' + neuron}] ANN {acc.ann_accuracy:.4f} | "
        + " ".join(f"T={T}: float {acc.float_accuracy[T]:.4f} int {acc.integer_accuracy[T]:.4f}"
                   for T in timesteps))
    return ArmResult(fnet=fnet, inet=inet, x=x if not callable(x) else first_test_images(data, 256)[0], accuracy=acc)


def _verify_stage(cfg: PipelineConfig, x_test: np.ndarray, inet: IntNet, target: Target, backend: Backend,
                  timer: StageTimer, log: Callable) -> dict:
    """Reference vs backend on the first `verify_samples` test samples (C6): report.json's "verify" section."""
    n, T = cfg.verify_samples, cfg.verify_timesteps
    section = {"samples": n, "timesteps": T, "bit_exact": None, "mismatches": None, "layers": []}
    if n == 0:
        return section
    from na_deploy.verify.bit_exact import verify

    with timer("verify_lava"):
        result = verify(inet, x_test[:n], T, target, backend).to_dict()
    section.update(result, bit_exact=bool(result["equal"]), mismatches=int(result["mismatching_samples"]))
    log(f"[verify] {n} samples at T={T}: " + (
        "bit-exact (all per-layer spike counts and readouts equal)" if section["bit_exact"]
        else f"{section['mismatches']} MISMATCHING samples; first: {result['first_mismatch']}"))
    return section


def _write_plots(cfg: PipelineConfig, data_name: str, report: dict, arm: ArmResult, run_dir: Path) -> None:
    """accuracy_vs_T.png (both arms), layer_activity.png and occasional_noise.png (the noise-adaptor arm)."""
    from na_deploy.evaluate.plots import plot_accuracy_vs_t, plot_layer_activity, plot_occasional_noise

    arms = {"with noise adaptor": {"ann": report["ann_accuracy"], **report["snn_accuracy"]}}
    if "no_noise_adaptor" in report:
        other = report["no_noise_adaptor"]
        arms["without noise adaptor"] = {"ann": other["ann_accuracy"], **other["snn_accuracy"]}
    plot_accuracy_vs_t(arms, run_dir / "accuracy_vs_T.png", title=f"{cfg.model} on {data_name}, p={cfg.p}")
    plot_layer_activity(report["resources"]["nodes"], run_dir / "layer_activity.png",
                        title=f"Spiking activity per layer (integer SNN, T={max(arm.accuracy.timesteps)})")
    if arm.noise is not None:
        plot_occasional_noise(arm.noise.to_dict(), run_dir / "occasional_noise.png")


def _main_arm(cfg: PipelineConfig, data, target: Target, run_dir: Path, timer: StageTimer, log: Callable):
    """The noise-adaptor arm in the chosen mode (net.nad.h5: exported and verified) and, with --neuron,
    report["neuron_modes"]: both modes of the same checkpoint side by side (the other's nets: net_<mode>.*)."""
    chosen = cfg.neuron or "subtract"
    arm = _accuracy_arm(run_dir / "qat.ckpt", data, cfg, target, run_dir, "", timer, log, neuron=chosen)
    if cfg.neuron is None:
        return arm, None
    other = "zero" if chosen == "subtract" else "subtract"
    alt = _accuracy_arm(run_dir / "qat.ckpt", data, cfg, target, run_dir, f"_{other}", timer, log, neuron=other)
    modes = {m: mode_summary(a) for m, a in sorted({chosen: arm, other: alt}.items())}
    modes.update(chosen=chosen, verified=chosen)
    return arm, modes


def _run_stages(cfg: PipelineConfig, target: Target, backend: Optional[Backend], data, run_dir: Path,
                timer: StageTimer, log: Callable) -> dict:
    """Train, convert, export, verify, resources, (the arm without noise adaptor), plots -> the report dict."""
    from na_deploy.pipeline.from_nir import nir_arm
    from na_deploy.pipeline.fp_start import fp_checkpoint

    if cfg.from_nir is not None:
        arm, modes = ArmResult(*nir_arm(cfg, data, target, run_dir, timer, log)), None
    else:
        with timer("train_fp"):
            fp_checkpoint(cfg, data, run_dir / "fp.ckpt", log=log)
        with timer("train_qat"):
            _train_qat(cfg, data, run_dir, True, "qat.ckpt")
        arm, modes = _main_arm(cfg, data, target, run_dir, timer, log)
    report = arm.to_report()
    if modes is not None:
        report["neuron_modes"] = modes
    with timer("export_lava"):
        backend, missing = backend_or_reason(target, arm.inet, backend)  # (imports the simulator, where installed)
        try:
            if backend is not None:
                backend.export(arm.inet, run_dir / "lava", timesteps=cfg.verify_timesteps,
                               source=f"{cfg.from_nir or cfg.model} (na-deploy pipeline)")
        except ExportNotSupported as e:
            log(f"[export] skipped: {e}")
    from na_deploy.data.loaders import first_test_images
    x_verify = first_test_images(data, cfg.verify_samples)[0]
    report["verify"] = (_verify_stage(cfg, x_verify, arm.inet, target, backend, timer, log) if backend is not None
                        else verify_skipped(cfg, x_verify, arm.inet, target, run_dir, missing, log))
    with timer("resources"):
        report["resources"] = target.resource_report(arm.inet, arm.accuracy.totals_trace(), inputs=arm.x)
    if arm.inet.meta.get("saturated_channels"):  # only when saturation happened: other reports keep their keys
        report["saturated_channels"] = arm.inet.meta["saturated_channels"]
    if cfg.compare_no_noise_adaptor:
        with timer("train_qat_no_noise_adaptor"):
            _train_qat(cfg, data, run_dir, False, "qat_no_na.ckpt")
        other = _accuracy_arm(run_dir / "qat_no_na.ckpt", data, cfg, target, run_dir, "_no_na", timer, log,
                              neuron=cfg.neuron or "subtract")
        report["no_noise_adaptor"] = other.to_report()
    with timer("plots"):
        _write_plots(cfg, data.name, report, arm, run_dir)
    report["config"] = config_record(cfg, target)
    report["data"] = {"name": data.name, "fingerprint": data.fingerprint, "train": int(data.num_train),
                      "test": int(data.num_test), "evaluated": int(arm.accuracy.samples)}
    return report


def config_record(cfg: PipelineConfig, target: Target) -> dict:
    """report.json's "config": every option as run (`nir_config`), noise_range only when it is not the paper's 1
    (so a default run's report.json keeps its bytes); weights and weights_sha256 only with --weights."""
    from na_deploy.pipeline.fp_start import weights_config
    from na_deploy.pipeline.from_nir import nir_config

    config = weights_config(nir_config(cfg, {**asdict(cfg), "timesteps": list(cfg.timesteps), "target": target.name}))
    return {k: v for k, v in config.items() if k != "noise_range" or v != 1.0}


def _write_report(run_dir: Path, report: dict) -> None:
    """report.json (sorted keys), report.md, then COMPLETE (last: only a finished run has it)."""
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2, sort_keys=True, default=_json))
    atomic_write_text(run_dir / "report.md", format_report_md(report))
    atomic_write_text(run_dir / "COMPLETE", "finished\n")


def run_pipeline(cfg: PipelineConfig, target: Target, out: str | Path, force: bool = False,
                 log: Callable[[str], None] = print, backend: Optional[Backend] = None) -> dict:
    """Run every stage; return the report dict (also written as report.json / report.md). backend: what exports
    and verifies the IntNet (default: `target.backend()`, e.g. Lava for loihi2)."""
    cfg.validate()
    timer = StageTimer()
    with timer("load_data"):
        data = load_run_data(cfg, log)
    from na_deploy.pipeline.fp_start import check_start

    check_start(cfg, data)  # model, builder, weights, ops: refused before the run folder exists
    t_start = time.perf_counter()
    with run_folder(out, force, log, "pipeline") as (final, run_dir):
        log(f"[pipeline] data {data.name}: {data.num_train} train / {data.num_test} test, "
            f"input {tuple(data.input_shape)}, {data.num_classes} classes; run folder {final}")
        report = _run_stages(cfg, target, backend, data, run_dir, timer, log)
        report["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - t_start, 3)}
        report["environment"] = run_environment(cfg.device)  # threads, device, versions (issue 20)
        _write_report(run_dir, report)
    return report


def load_run_data(cfg: PipelineConfig, log: Callable[[str], None]):
    """The run's data set (`pipeline`, `pipeline --compare`): --data, its labels and --verify-samples are checked
    before any folder is made."""
    from na_deploy.data.arrays import load_dataset

    data = load_dataset(cfg.data, cfg.seed, cfg.num_classes, log, augment=cfg.augment, workers=cfg.workers)
    if cfg.verify_samples > data.num_test:
        raise NaDeployError(f"--verify-samples {cfg.verify_samples} conflicts with the data: its test split has "
                            f"{data.num_test} samples")
    return data


def _json(o):
    """json.dumps default: numpy arrays and scalars as Python values, anything else as its str."""
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
    if v.get("skipped"):
        lines.append(skipped_summary(v))
    if v["samples"]:
        lines.append(f"verify: {v['samples']} samples at T={v['timesteps']}: "
                     + ("BIT-EXACT" if v["bit_exact"] else f"{v['mismatches']} mismatching samples"))
    return "\n".join(lines)


def format_report_md(report: dict) -> str:
    """report.md: the summary table, verify per layer, occasional noise, resources and timings."""
    c = report.get("config", {})
    how = ("pre-charge th/2, reset by subtraction" if c.get("neuron", "subtract") == "subtract" else
           f"neuron mode {c.get('neuron')}, see the neuron-mode table")
    out = [f"# na-deploy run: {c.get('model')} on {report.get('data', {}).get('name')}, p={c.get('p')}", "",
           f"Accuracies in % on the test split (ANN = quantized ANN in eval mode; SNN = integrate-and-fire, "
           f"{how}).", "", "```", format_summary(report), "```", ""]
    if "neuron_modes" in report:
        out += format_neuron_modes(report["neuron_modes"])
    v = report["verify"]
    out += skipped_md(v) if v.get("skipped") else []
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
        out += format_noise_md(report["occasional_noise"]["integer"])
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
