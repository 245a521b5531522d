"""`pipeline --preset` (na_deploy/pipeline/presets.py): the paper's §5.1 values, overridable flag by flag, recorded in
report.json's config; an unknown preset or a bad value is one line, exit 2, nothing written."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest
from click.testing import CliRunner

from na_deploy.cli.main import cli
from na_deploy.errors import NaDeployError
from na_deploy.pipeline.run import PipelineConfig
from na_deploy.pipeline.presets import PRESETS, resolve_config

DEFAULTS = {f.name: f.default for f in fields(PipelineConfig)}


def test_paper_values_and_overrides():
    c = resolve_config(DEFAULTS, "cifar10-resnet18", {"epochs_qat": 3})
    assert (c["model"], c["p"], c["lr_qat"], c["weight_decay"], c["epochs_qat"], c["preset"]) == (
        "resnet18", 2, 0.1, 5e-4, 3, "cifar10-resnet18")
    i = resolve_config(DEFAULTS, "imagenet-resnet50", {})
    assert (i["model"], i["p"], i["weight_decay"], i["epochs_qat"], i["lr_qat"]) == ("resnet50", 3, 2.5e-5, 160, 0.1)
    assert resolve_config(DEFAULTS, None, {}) == DEFAULTS
    assert all(set(p["ours"]) <= set(DEFAULTS) and set(p) - {"ours"} <= set(DEFAULTS) for p in PRESETS.values())
    PipelineConfig(**c).validate()
    with pytest.raises(NaDeployError, match="--weight-decay -1"):
        resolve_config(DEFAULTS, None, {"weight_decay": -1})


@pytest.mark.parametrize("args, needle", [(["--preset", "cifar10"], "--preset 'cifar10': unknown; allowed:"),
                                          (["--lr-qat", "0"], "--lr-qat 0.0: allowed: > 0")])
def test_bad_preset_or_value_is_one_line_and_writes_nothing(tmp_path, args, needle):
    r = CliRunner().invoke(cli, ["pipeline", *args, "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not list(tmp_path.iterdir())


def test_smoke_preset_runs_and_report_holds_what_ran(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["pipeline", "--preset", "smoke", "--epochs-qat", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    c = json.loads((out / "report.json").read_text())["config"]
    assert (c["preset"], c["epochs_fp"], c["epochs_qat"], c["timesteps"], c["verify_samples"], c["weight_decay"]) == (
        "smoke", 2, 1, [1, 2, 4], 4, 5e-4)
