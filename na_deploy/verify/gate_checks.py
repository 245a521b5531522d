"""The checks of the verify gate besides bit-exactness, each one function -> `CheckResult` (na_deploy.verify.gate
runs them): provenance (C8), fidelity to the FloatNet, golden traces; plus the request rules the gate
refuses before anything runs, and where a net's FloatNet is found.

A check that fails is a result (`ok` False and a one-line `message` naming what differs); a request that
cannot be answered (a file missing, a FloatNet of another net, options that exclude each other) raises a
one-line NaDeployError naming the option (the same names as `na-deploy verify`'s flags, so the CLI prints
the core's messages as they are).
"""
from __future__ import annotations

import math

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from na_deploy.errors import NaDeployError
from na_deploy.ir import FloatNet, IntNet
from na_deploy.protocols import Target
from na_deploy.verify.bit_exact import VerifyReport

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: `ok`, a one-line `message`, the `settings` it ran with (thresholds) and its own
    report (`details`). Its JSON section is {"ok", **settings, "message", **details}, in that order."""

    ok: bool
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"ok": self.ok, **self.settings, "message": self.message, **self.details}


def check_gate_request(*, jobs: int = 1, shard: Optional[str] = None, golden: Optional[PathLike] = None,
                       write_golden: Optional[PathLike] = None, fidelity: bool = True, float_net: Any = None,
                       min_agreement: Optional[float] = None, max_node_change: Optional[float] = None,
                       timeout_s: Optional[float] = None) -> None:
    """Argument combinations that cannot work, refused (one line) before anything runs."""
    if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
        raise NaDeployError(f"--timeout {timeout_s}: allowed: a finite number of seconds > 0 (or leave it out: "
                            "the default scales with the first Lava run call)")
    if jobs < 1:
        raise NaDeployError(f"--jobs {jobs}: allowed: an integer >= 1")
    if jobs > 1 and shard:
        raise NaDeployError("--jobs and --shard: give one (--jobs J runs shards 1/J .. J/J itself)")
    if jobs > 1 and (golden or write_golden):
        raise NaDeployError("--golden / --write-golden with --jobs: golden files hold every sample of one run; "
                            "use them without --jobs")
    if golden and write_golden:
        raise NaDeployError("--golden and --write-golden: give one (check against a golden file, or write one)")
    if write_golden and shard:
        raise NaDeployError("--write-golden with --shard: a golden file holds every sample; drop --shard")
    if not fidelity and (min_agreement is not None or float_net or max_node_change is not None):
        raise NaDeployError("--skip-fidelity with --min-agreement / --max-node-change / --float-net: the fidelity "
                            "check is off")
    for opt, value in (("min_agreement", min_agreement), ("max_node_change", max_node_change)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise NaDeployError(f"--{opt.replace('_', '-')} {value}: allowed: a share in [0, 1]")


def find_float_net(net: IntNet, net_path: Optional[PathLike], float_net: Union[FloatNet, PathLike, None]):
    """The FloatNet for the fidelity check: `float_net` (a FloatNet or its file), else the one the IntNet at
    `net_path` records beside it (or the `convert` naming rule); None when there is none, or when the file
    beside it is not the one the net was made from (its SHA-256 differs from the net's `made_from` record,
    docs/contract.md C8): then one line on stderr says fidelity is skipped and why."""
    from na_deploy.io import load_net
    from na_deploy.verify.provenance import recorded_float_path

    if isinstance(float_net, FloatNet):
        return float_net
    if float_net is None:
        cand = None if net_path is None else recorded_float_path(net_path, net)
        if cand is None or not cand.is_file():
            return None
        if not _is_recorded_float_net(net, cand):
            print(f"fidelity: skipped: {cand} is not the FloatNet {net_path} was made from (its SHA-256 differs "
                  "from the net's made_from record); pass --float-net FILE to compare with it anyway",
                  file=sys.stderr)
            return None
        float_net = str(cand)
    fnet = load_net(float_net)
    if not isinstance(fnet, FloatNet):
        raise NaDeployError(f"--float-net {float_net}: holds a {type(fnet).__name__}; allowed: the FloatNet "
                            "(*.float.nad.h5) that `na-deploy convert` wrote with NET")
    return fnet


def _is_recorded_float_net(net: IntNet, path: PathLike) -> bool:
    """Whether the file at `path` has the SHA-256 the IntNet records for its FloatNet (True without a record:
    files written before the chain existed)."""
    from na_deploy.io.made_from import float_net_record, sha256_file

    rec = float_net_record(net.meta)
    return rec is None or rec["sha256"] == sha256_file(path)


def check_provenance(net_path: PathLike, against: PathLike, target: Target) -> CheckResult:
    """The chain `against` (QAT checkpoint or FloatNet) -> ... -> the IntNet file (C8)."""
    from na_deploy.verify.provenance import check_chain

    chain = check_chain(net_path, against, target)
    details = {k: v for k, v in chain.to_dict().items() if k != "ok"}
    return CheckResult(bool(chain.ok), "provenance chain intact" if chain.ok else chain.broken, details)


def check_fidelity(fnet: FloatNet, net: IntNet, target: Target, x: Any, timesteps: int,
                   min_agreement: Optional[float] = None, max_node_change: Optional[float] = None,
                   trace: Any = None) -> CheckResult:
    """The integer SNN against the float SNN on `x`: agreement at least `min_agreement` (default
    DEFAULT_MIN_AGREEMENT) and, when given, no node changing more than `max_node_change` over its inputs.
    `trace`: the reference trace of `x` at `timesteps` when already run (it is not run again)."""
    from na_deploy.verify.fidelity import DEFAULT_MIN_AGREEMENT, fidelity

    m = DEFAULT_MIN_AGREEMENT if min_agreement is None else float(min_agreement)
    rep = fidelity(fnet, net, target, x, timesteps, trace=trace)
    failures = rep.failures(m, max_node_change)
    message = "; ".join(failures) if failures else (
        f"fidelity: the integer SNN agrees with the float SNN on {100 * rep.agreement_float_snn:.1f}% "
        f"(minimum {100 * m:.1f}%)")
    return CheckResult(not failures, message, rep.to_dict(),
                       {"min_agreement": m, "max_node_change": max_node_change})


def check_golden(path: PathLike, report: VerifyReport, net: IntNet) -> CheckResult:
    """Both sides' traces against the golden file at `path` (the backend's first: it is what runs)."""
    from na_deploy.verify.golden import golden_report, load_golden

    golden = load_golden(path)
    if [int(i) for i in golden.sample_ids] != list(report.sample_ids):
        raise NaDeployError(f"--golden {path}: holds other samples than this run verifies; use the same --data, "
                            "--samples (and no --shard) as when it was written")
    res = golden_report(golden, report.backend_trace, net)
    if res["equal"]:
        res = golden_report(golden, report.reference_trace, net)
    d = res["first_difference"]
    msg = "golden traces reproduced exactly" if d is None else (
        f"golden difference: sample {d['sample']}, node {d['node']}, neuron {tuple(d['neuron'] or ())}: "
        f"golden {d['golden']}, got {d['got']}")
    if res.get("note"):
        msg += f" ({res['note']})"
    return CheckResult(d is None, msg, res)


__all__ = ["CheckResult", "check_gate_request", "find_float_net", "check_provenance", "check_fidelity",
           "check_golden"]
