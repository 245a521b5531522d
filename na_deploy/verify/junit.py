"""A verify report as JUnit XML, the test-result format every CI reads (GitHub Actions, GitLab, Jenkins).

`junit_xml(report)` turns the JSON report of `na-deploy verify` (a dict: `GateReport.to_dict()` of
na_deploy.verify.gate, i.e. `VerifyReport.to_dict()` plus the "provenance" / "fidelity" / "golden" sections)
into one <testsuite> with
  * one <testcase name="sample <id>" classname="na_deploy.verify.bit_exact.samples"> per verified sample, failing with
    that sample's first difference (node, neuron, reference vs backend value);
  * one <testcase name="<node>" classname="na_deploy.verify.bit_exact.layers"> per node, and one for the readout
    potentials, failing when any sample's counts differ there;
  * one <testcase classname="na_deploy.verify.bit_exact.checks"> per check section present (provenance, fidelity,
    golden), failing with the check's one-line message ({"ok": None} marks it skipped), and for a merged
    report of shards (`na-deploy verify-merge`) one case "shards", failing when a shard is missing.
Deterministic: the same report gives the same bytes (document order follows the report; times come from the
report's "seconds", nothing is read from the clock). Built with xml.etree, so names are escaped; characters
that XML 1.0 cannot hold are replaced by U+FFFD.
"""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from typing import Any, Optional

from na_deploy.errors import NaDeployError

SAMPLES_CLASS = "na_deploy.verify.bit_exact.samples"
LAYERS_CLASS = "na_deploy.verify.bit_exact.layers"
CHECKS_CLASS = "na_deploy.verify.bit_exact.checks"
CHECKS = ("provenance", "fidelity", "golden")
READOUT_CASE = "readout potentials"
_BAD_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(v: Any) -> str:
    return _BAD_XML_CHARS.sub("\ufffd", str(v))


def _seconds(v: Any) -> str:
    return f"{float(v or 0.0):.3f}"


def _neuron(n: Any) -> str:
    return "()" if n is None else "(" + ", ".join(str(i) for i in n) + (",)" if len(n) == 1 else ")")


def _describe(first: dict) -> str:
    """One line naming a difference record {sample, node, neuron, reference, lava[, step]}."""
    if first.get("node") is None:
        return f"sample {first.get('sample')}: differs"
    step = f", window step {first['step']}" if first.get("step") else ""
    return (f"sample {first.get('sample')}: node {first.get('node')}, neuron {_neuron(first.get('neuron'))}: "
            f"reference {first.get('reference')}, backend {first.get('lava')}{step}")


def _require(report: Any) -> None:
    if not isinstance(report, dict):
        raise NaDeployError(f"junit: the report is a {type(report).__name__}; allowed: a verify report dict "
                            "(VerifyReport.to_dict() or the JSON of `na-deploy verify --json`)")
    for key in ("per_sample", "layers", "readout_equal", "backend"):
        if key not in report:
            raise NaDeployError(f"junit: the report has no {key!r}; allowed: a verify report with per_sample, "
                                "layers, readout_equal and backend (`na-deploy verify --json` of this version)")


class _Suite:
    """Collects test cases in document order and counts tests / failures / skipped."""

    def __init__(self, name: str):
        self.el = ET.Element("testsuite", {"name": _text(name)})
        self.tests = self.failures = self.skipped = 0

    def case(self, classname: str, name: str, seconds: Any = 0.0, *, failure: Optional[str] = None,
             detail: Any = None, skipped: Optional[str] = None) -> None:
        tc = ET.SubElement(self.el, "testcase", {"classname": classname, "name": _text(name),
                                                 "time": _seconds(seconds)})
        self.tests += 1
        if failure is not None:
            self.failures += 1
            f = ET.SubElement(tc, "failure", {"message": _text(failure), "type": "AssertionError"})
            f.text = _text(failure if detail is None else json.dumps(detail, sort_keys=True, default=str))
        elif skipped is not None:
            self.skipped += 1
            ET.SubElement(tc, "skipped", {"message": _text(skipped)})


def _sample_cases(suite: _Suite, report: dict) -> None:
    per = float((report.get("seconds") or {}).get("reference_per_sample") or 0.0) + float(
        (report.get("seconds") or {}).get("lava_per_sample") or 0.0)
    first_mismatch = report.get("first_mismatch") or {}
    for rec in report["per_sample"]:
        first = rec.get("first")
        if rec.get("equal", first is None) and first is None:
            suite.case(SAMPLES_CLASS, f"sample {rec['sample']}", per)
            continue
        first = dict(first or {"sample": rec["sample"]})
        if first_mismatch.get("sample") == rec["sample"] and first_mismatch.get("node") == first.get("node"):
            first = {**first, **first_mismatch}  # the located record: step and earliest divergence
        suite.case(SAMPLES_CLASS, f"sample {rec['sample']}", per, failure=_describe(first), detail=first)


def _layer_cases(suite: _Suite, report: dict) -> None:
    firsts = [r["first"] for r in report["per_sample"] if r.get("first")]
    for layer in report["layers"]:
        if layer.get("equal"):
            suite.case(LAYERS_CLASS, layer["node"])
            continue
        at = next((f for f in firsts if f.get("node") == layer["node"]), None)
        msg = (f"node {layer['node']}: spike counts differ ({layer.get('reference')} spikes in total in the "
               f"reference, {layer.get('lava')} on the backend)" + (f"; first: {_describe(at)}" if at else ""))
        suite.case(LAYERS_CLASS, layer["node"], failure=msg, detail={"layer": layer, "first": at})
    if report["readout_equal"]:
        suite.case(LAYERS_CLASS, READOUT_CASE)
        return
    readout = {lay["node"] for lay in report["layers"]}
    at = next((f for f in firsts if f.get("node") not in readout), None)
    msg = "readout potentials differ" + (f"; first: {_describe(at)}" if at else "")
    suite.case(LAYERS_CLASS, READOUT_CASE, failure=msg, detail={"first": at})


def _check_cases(suite: _Suite, report: dict) -> None:
    for name in CHECKS:
        sec = report.get(name)
        if sec is None:
            continue
        if not isinstance(sec, dict) or "ok" not in sec:
            raise NaDeployError(f"junit: report[{name!r}] is not a check section; allowed: a dict with 'ok' "
                                "(true, false or null for skipped) and 'message'")
        msg = str(sec.get("message") or "")
        if sec["ok"] is None:
            suite.case(CHECKS_CLASS, name, skipped=msg or "skipped")
        elif sec["ok"]:
            suite.case(CHECKS_CLASS, name)
        else:
            suite.case(CHECKS_CLASS, name, failure=f"{name}: {msg}", detail=sec)


def _shards_case(suite: _Suite, report: dict) -> None:
    """A merged report (`na-deploy verify-merge`) says whether every shard was there: one case "shards"."""
    if "complete" not in report:
        return
    if report["complete"]:
        suite.case(CHECKS_CLASS, "shards")
        return
    missing = list(report.get("missing_shards") or [])
    n = (report.get("shards") or {}).get("n", "?")
    suite.case(CHECKS_CLASS, "shards", failure=f"shards: {len(missing)} of {n} missing: "
               + ", ".join(f"{i}/{n}" for i in missing), detail=report.get("shards"))


def _properties(report: dict) -> dict:
    keys = ("backend", "timesteps", "samples", "net_digest", "net", "data", "shard")
    return {k: report[k] for k in keys if report.get(k) is not None}


def junit_xml(report: dict, suite_name: str = "na-deploy verify") -> str:
    """The JUnit XML document (str, with an XML declaration) of a verify report dict; see the module doc.

    Raises NaDeployError naming the missing key when `report` is not a verify report."""
    _require(report)
    suite = _Suite(suite_name)
    props = _properties(report)
    if props:
        pe = ET.SubElement(suite.el, "properties")
        for k, v in props.items():
            ET.SubElement(pe, "property", {"name": k, "value": _text(v)})
    _sample_cases(suite, report)
    _layer_cases(suite, report)
    _check_cases(suite, report)
    _shards_case(suite, report)
    secs = report.get("seconds") or {}
    total = _seconds(float(secs.get("reference") or 0.0) + float(secs.get("lava") or 0.0))
    counts = {"tests": str(suite.tests), "failures": str(suite.failures), "errors": "0",
              "skipped": str(suite.skipped), "time": total}
    suite.el.attrib.update(counts)
    root = ET.Element("testsuites", {"name": _text(suite_name), **counts})
    root.append(suite.el)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | os.PathLike, report: dict, suite_name: str = "na-deploy verify") -> None:
    """`junit_xml(report)` written atomically to `path` (UTF-8)."""
    from na_deploy.atomic import atomic_write_bytes

    atomic_write_bytes(path, junit_xml(report, suite_name).encode("utf-8"))


__all__ = ["junit_xml", "write_junit", "SAMPLES_CLASS", "LAYERS_CLASS", "CHECKS_CLASS", "READOUT_CASE"]
