"""Hyperparameter presets of `na-deploy pipeline --preset NAME`, from the paper's §5.1 where it states them.

Li & Rajendran (arXiv 2312.05290, §5.1): QAT from pre-trained full-precision ResNets, SGD, cross-entropy,
cosine learning rate from 0.1, weight decay 5e-4 (CIFAR-10) / 2.5e-5 (ImageNet), 160 epochs, p = 2 (CIFAR-10) /
p = 3 (ImageNet). The paper does not state the batch size nor how its full-precision weights were trained; no
weights can be downloaded here, so the pipeline trains them first: those values are ours and marked so
(`ours`); `--weights FILE --epochs-fp 0` starts QAT from a user's weights instead (e.g. `--preset
imagenet-resnet50 --model torchvision:resnet50 --weights resnet50.pth --epochs-fp 0`, issue 19). Every field is
overridable flag by flag; report.json's "config" holds the values that ran and the preset's name. `augment`
(na_deploy.data.transforms) is the standard augmentation of each data set, marked ours since §5.1 does not spell
it out: cifar = zero-pad 4 + random crop + horizontal flip; imagenet = RandomResizedCrop 224
+ flip for training, resize 256 + centre crop 224 for evaluation.
"""
from __future__ import annotations

from typing import Any

from na_deploy.errors import NaDeployError

PRESETS: dict[str, dict[str, Any]] = {
    "cifar10-resnet18": dict(model="resnet18", p=2, epochs_qat=160, lr_qat=0.1, weight_decay=5e-4,
                             epochs_fp=200, lr_fp=0.1, batch_size=128, timesteps=(1, 2, 4, 8, 16),
                             verify_timesteps=4, augment="cifar",
                             ours=("epochs_fp", "lr_fp", "batch_size", "timesteps", "verify_timesteps", "augment")),
    "imagenet-resnet50": dict(model="resnet50", p=3, epochs_qat=160, lr_qat=0.1, weight_decay=2.5e-5,
                              epochs_fp=90, lr_fp=0.1, batch_size=256, timesteps=(8, 16, 32, 64),
                              verify_timesteps=8, verify_samples=2, augment="imagenet",
                              ours=("epochs_fp", "lr_fp", "batch_size", "timesteps", "verify_timesteps",
                                    "verify_samples", "augment")),
    "cifar10-resnet18-smoke": dict(model="resnet18", p=2, epochs_fp=3, epochs_qat=4, lr_fp=0.05, lr_qat=0.01,
                                   weight_decay=5e-4, batch_size=32, timesteps=(1, 2, 4), verify_timesteps=4,
                                   verify_samples=2, augment="none",
                                   ours=("epochs_fp", "epochs_qat", "lr_fp", "lr_qat", "batch_size", "timesteps",
                                         "verify_timesteps", "verify_samples", "augment")),
    "smoke": dict(epochs_fp=2, epochs_qat=2, timesteps=(1, 2, 4), verify_samples=4, verify_timesteps=4,
                  ours=("epochs_fp", "epochs_qat", "timesteps", "verify_samples", "verify_timesteps")),
}


def preset_values(name: str) -> dict[str, Any]:
    """The PipelineConfig fields a preset sets; NaDeployError (one line) for an unknown name."""
    if name not in PRESETS:
        raise NaDeployError(f"--preset {name!r}: unknown; allowed: {', '.join(sorted(PRESETS))}")
    return {k: v for k, v in PRESETS[name].items() if k != "ours"}


def resolve_config(defaults: dict[str, Any], preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    """Config fields: the built-in defaults, then the preset's values, then every flag the user gave."""
    out = dict(defaults)
    if preset is not None:
        out.update(preset_values(preset))
        out["preset"] = preset
    out.update(given)
    for key, flag, ok in (("lr_fp", "--lr-fp", lambda v: v > 0), ("lr_qat", "--lr-qat", lambda v: v > 0),
                          ("batch_size", "--batch-size", lambda v: v >= 1), ("weight_decay", "--weight-decay",
                                                                            lambda v: v >= 0)):
        if key in out and not ok(out[key]):
            raise NaDeployError(f"{flag} {out[key]}: allowed: " + ("> 0" if key.startswith("lr") else
                                                                  ">= 1" if key == "batch_size" else ">= 0"))
    return out


__all__ = ["PRESETS", "preset_values", "resolve_config"]
