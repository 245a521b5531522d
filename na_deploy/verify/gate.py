"""The verify gate (contract C6, C8): every check `na-deploy verify` runs on a deployed net, as one call.

`run_gate(net, inputs, T, target, backend, ...)` runs, in this order (the checks in
na_deploy.verify.gate_checks):
  1. provenance, with `against=`: the chain `against` -> ... -> the net's file (C8);
  2. reference vs backend on `inputs` (na_deploy.verify.bit_exact, C6); with `jobs=J > 1` instead J
     `na-deploy verify --shard k/J` processes, merged (na_deploy.verify.jobs);
  3. golden traces: `golden=` checks them against a file, `write_golden=` stores them (one run, no jobs);
  4. fidelity to the FloatNet: on whenever a FloatNet is given (`float_net=`) or found beside the net's file,
     unless `fidelity=False`; `min_agreement=` / `max_node_change=` set its thresholds.
It returns a `GateReport`: `passed` is True when reference == backend on every sample asked for (no shard
missing) and every other check that ran passed; `failures()` names what did not. `to_dict()` is the JSON
report of `na-deploy verify --json` (the same keys in the same order), `lines()` the text it prints,
`write(json_path, junit_path)` its files (atomically).

A failing check is a result, never an exception; a request that cannot be answered raises a one-line
NaDeployError before anything runs where it can be known then. The target and backend come in as objects
(na_deploy.protocols): the core never resolves their names (the CLI and the pytest plugin do).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from na_deploy.errors import NaDeployError
from na_deploy.ir import FloatNet, IntNet
from na_deploy.protocols import Backend, Target
from na_deploy.verify.bit_exact import VerifyReport
from na_deploy.verify.gate_checks import (CheckResult, PathLike, check_fidelity, check_gate_request, check_golden,
                                          check_provenance, find_float_net)
from na_deploy.verify.report_text import check_line, format_report, verdict_line

CHECKS = ("provenance", "fidelity", "golden")  # the checks besides bit-exactness, in report order


def _jsonable(o: Any) -> Any:
    return o.tolist() if hasattr(o, "tolist") else str(o)


@dataclass(frozen=True)
class GateReport:
    """What the gate found. `bit_exact`: reference vs backend as JSON (`VerifyReport.to_dict()`, or the merged
    report of a --jobs run); `verify_report`: the VerifyReport itself with both traces (None after --jobs)."""

    net: Optional[str]  # the IntNet's file as given (None: a net given in memory)
    data: str  # where the inputs came from ("digits": the embedded digits)
    bit_exact: Mapping[str, Any]
    net_digest: str
    shard: Optional[str] = None
    provenance: Optional[CheckResult] = None
    fidelity: Optional[CheckResult] = None
    golden: Optional[CheckResult] = None
    verify_report: Optional[VerifyReport] = field(default=None, compare=False, repr=False)

    def checks(self) -> dict[str, Optional[CheckResult]]:
        """provenance, fidelity, golden -> their results (None: the check did not run)."""
        return {name: getattr(self, name) for name in CHECKS}

    @property
    def equal(self) -> bool:
        """Reference == backend on every sample verified (C6)."""
        return bool(self.bit_exact["equal"])

    @property
    def complete(self) -> bool:
        """False only for a merged report with shards missing."""
        return self.bit_exact.get("complete", True) is not False

    @property
    def passed(self) -> bool:
        return self.equal and self.complete and all(c.ok for c in self.checks().values() if c is not None)

    def failures(self) -> list[tuple[str, str]]:
        """(check, one-line reason) for each part that failed: "bit_exact", "shards", or a check's name."""
        out = []
        if not self.equal:
            out.append(("bit_exact", verdict_line(self.bit_exact)))
        if not self.complete:
            missing = self.bit_exact.get("missing_shards") or []
            out.append(("shards", f"shard(s) {', '.join(map(str, missing))} missing: their samples were not "
                                  "verified"))
        out += [(name, c.message) for name, c in self.checks().items() if c is not None and not c.ok]
        return out

    def failure_message(self) -> str:
        """One line naming every failed part, e.g. "verify gate failed: provenance: ...; fidelity: ..."."""
        fails = self.failures()
        if not fails:
            return "verify gate passed"
        return "verify gate failed: " + "; ".join(f"{name}: {why}" for name, why in fails)

    def to_dict(self) -> dict:
        """The JSON report of `na-deploy verify --json`: net, data, the bit-exact report's keys, shard,
        net_digest, provenance, fidelity, golden (None where a check did not run), passed."""
        payload: dict = {"net": self.net, "data": self.data}
        payload.update(self.bit_exact)
        payload.update(shard=self.shard, net_digest=self.net_digest,
                       **{name: None if c is None else c.to_dict() for name, c in self.checks().items()})
        payload["passed"] = self.passed
        return payload

    def to_json(self) -> str:
        """`to_dict()` as the bytes `verify --json` writes (indent 2, numpy values as lists, a final newline)."""
        return json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n"

    def lines(self) -> list[str]:
        """The text `na-deploy verify` prints: the per-layer table, the verdict, one line per check that ran."""
        d = self.to_dict()
        return format_report(d) + [check_line(name, d[name]) for name in CHECKS if d[name] is not None]

    def write(self, json_path: Optional[PathLike] = None, junit_path: Optional[PathLike] = None) -> None:
        """The JSON report and / or the JUnit XML (na_deploy.verify.junit), each written atomically."""
        if json_path:
            from na_deploy.atomic import atomic_write_text

            atomic_write_text(json_path, self.to_json())
        if junit_path:
            from na_deploy.verify.junit import write_junit

            write_junit(junit_path, self.to_dict())


def _intnet(net: Union[IntNet, PathLike], net_path: Optional[PathLike]) -> tuple[IntNet, Optional[PathLike]]:
    """(the IntNet, its file): `net` as given, or loaded from the path given as `net`."""
    if isinstance(net, IntNet):
        return net, net_path
    if not isinstance(net, (str, os.PathLike)):
        raise NaDeployError(f"run_gate: got a {type(net).__name__}; allowed: an IntNet or the path of its .nad.h5 "
                            "(written by `na-deploy convert`)")
    from na_deploy.io import load_intnet

    return load_intnet(net), net if net_path is None else net_path


def _fidelity_net(net: IntNet, net_path: Optional[PathLike], float_net: Union[FloatNet, PathLike, None],
                  thresholds: bool) -> Optional[FloatNet]:
    """The FloatNet the fidelity check compares with, checked against the IntNet's nodes; None when none is
    given or found (refused when thresholds were asked for)."""
    fnet = find_float_net(net, net_path, float_net)
    if fnet is None and thresholds:
        raise NaDeployError(f"--min-agreement / --max-node-change: {net_path or 'the net'} records no FloatNet "
                            "beside it; pass --float-net")
    if fnet is not None and [n.name for n in fnet.all_nodes()] != [n.name for n in net.all_nodes()]:
        raise NaDeployError(f"--float-net: its nodes differ from {net_path or 'the net'}'s; pass the FloatNet "
                            "written with it")
    return fnet


def _run_jobs(job_argv: Sequence[str], jobs: int) -> dict:
    """The merged report of `jobs` verify processes, without its "passed" (the gate decides that)."""
    from na_deploy.verify.jobs import run_verify_jobs

    merged = run_verify_jobs(job_argv, jobs)
    merged.pop("passed", None)
    return merged


def run_gate(net: Union[IntNet, PathLike], inputs: Any, timesteps: int, target: Target, backend: Backend, *,
             net_path: Optional[PathLike] = None, sample_ids: Optional[Sequence[int]] = None,
             data: Optional[str] = None, shard: Optional[str] = None, against: Optional[PathLike] = None,
             float_net: Union[FloatNet, PathLike, None] = None, fidelity: bool = True,
             min_agreement: Optional[float] = None, max_node_change: Optional[float] = None,
             golden: Optional[PathLike] = None, write_golden: Optional[PathLike] = None, jobs: int = 1,
             job_argv: Sequence[str] = (), progress: bool = False, timeout_s: Optional[float] = None) -> GateReport:
    """Run the verify gate on `net` (an IntNet, or the path of its .nad.h5) and `inputs` at T = `timesteps`.

    net_path: the IntNet's file when `net` is given in memory (provenance and the FloatNet beside it need it).
    sample_ids: the inputs' ids (e.g. test-set indices, default 0..N-1); data: where they came from (recorded,
    default "digits"); shard: the "i/n" they are (recorded; `na_deploy.verify.samples.select_samples` picks
    them). against / float_net / fidelity / min_agreement / max_node_change / golden / write_golden: the
    checks (module docstring). jobs > 1: run `na-deploy verify` with `job_argv` (NET and the options every
    child repeats) as `jobs` shard processes instead of in this process (at most one per sample).
    progress / timeout_s: for the backend's run (timeout_s None: the backend's default)."""
    from na_deploy.ir.offset_calibration import check_run
    from na_deploy.verify.bit_exact import verify
    from na_deploy.verify.golden import load_golden, net_digest, write_golden as store_golden
    from na_deploy.verify.samples import check_golden_inputs

    check_gate_request(jobs=jobs, shard=shard, golden=golden, write_golden=write_golden, fidelity=fidelity,
                       float_net=float_net, min_agreement=min_agreement, max_node_change=max_node_change,
                       timeout_s=timeout_s)
    net, net_path = _intnet(net, net_path)
    check_run(net, timesteps)  # T shorter than the offset calibration: refused
    if against and net_path is None:
        raise NaDeployError("--against: needs the IntNet's file; pass net as a path or net_path=")
    provenance = check_provenance(net_path, against, target) if against else None
    thresholds = min_agreement is not None or max_node_change is not None
    fnet = _fidelity_net(net, net_path, float_net, thresholds) if fidelity else None
    report = golden_result = None
    if jobs > 1:
        bit_exact = _run_jobs(job_argv, min(jobs, len(inputs)))
    else:
        ids = list(range(len(inputs))) if sample_ids is None else [int(i) for i in sample_ids]
        if golden:  # other data is a bad request (exit 2), checked before the run, never blamed on the net
            check_golden_inputs(load_golden(golden), inputs, ids)
        report = verify(net, inputs, timesteps, target, backend, progress=progress, sample_ids=ids,
                        timeout_s=timeout_s)
        bit_exact = report.to_dict()
        golden_result = check_golden(golden, report, net) if golden else None
        if write_golden:
            store_golden(write_golden, net, inputs, report.reference_trace, ids, report.timesteps)
    fid = None if fnet is None else check_fidelity(fnet, net, target, inputs, timesteps, min_agreement,
                                                   max_node_change,
                                                   trace=None if report is None else report.reference_trace)
    return GateReport(net=None if net_path is None else str(net_path), data=data or "digits", bit_exact=bit_exact,
                      net_digest=net_digest(net), shard=shard, provenance=provenance, fidelity=fid,
                      golden=golden_result, verify_report=report)


__all__ = ["GateReport", "CheckResult", "run_gate", "check_gate_request", "CHECKS"]
