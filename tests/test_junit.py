"""JUnit XML of a verify report (na_deploy/verify/junit.py): what CI tools read.

One test case per sample and per node (+ the readout potentials, + each check section present), failures
carrying the first difference, suite counts that add up, deterministic bytes, read back both by xml.etree and
by junitparser (the library CI report tools build on); a real report from Lava with one injected fault.
"""
from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from junitparser import Failure, JUnitXml, Skipped

from na_deploy.errors import NaDeployError
from na_deploy.verify.junit import CHECKS_CLASS, LAYERS_CLASS, READOUT_CASE, SAMPLES_CLASS, junit_xml, write_junit


def _report(bad: bool = False) -> dict:
    """A verify JSON report as `na-deploy verify --json` writes it (4 samples with ids 10..13, two nodes)."""
    first = {"sample": 12, "node": "conv1", "neuron": [0, 2, 1], "reference": 4, "lava": 5}
    per = [{"sample": i, "equal": not (bad and i == 12), "first": first if bad and i == 12 else None}
           for i in (10, 11, 12, 13)]
    return {"net": "build/net.nad.h5", "data": "digits", "equal": not bad, "samples": 4, "timesteps": 8,
            "layers": [{"node": "conv0", "reference": 40, "lava": 40, "equal": True},
                       {"node": "conv1", "reference": 17, "lava": 18 if bad else 17, "equal": not bad}],
            "readout_equal": True, "mismatching_samples": int(bad),
            "first_mismatch": {**first, "step": 3, "lava_step_in_slot": 5,
                               "earliest": {"node": "conv1", "neuron": [0, 2, 1], "step": 3,
                                            "lava_step_in_slot": 5}} if bad else None,
            "seconds": {"reference": 0.25, "lava": 2.0, "reference_per_sample": 0.0625, "lava_per_sample": 0.5},
            "backend": "lava-0.10-loihi2simcfg-fixed_pt", "sample_ids": [10, 11, 12, 13], "per_sample": per,
            "net_digest": "ab" * 32, "shard": None,
            "provenance": {"ok": True, "message": "provenance chain intact"},
            "fidelity": {"ok": not bad, "message": "agreement 0.91 < 0.97" if bad else "ok"},
            "golden": None}


def _cases(xml: str) -> list[ET.Element]:
    root = ET.fromstring(xml)
    assert root.tag == "testsuites" and len(root) == 1 and root[0].tag == "testsuite"
    return root[0].findall("testcase")


def test_passing_report_one_case_per_sample_node_and_check():
    xml = junit_xml(_report())
    cases = _cases(xml)
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        (SAMPLES_CLASS, "sample 10"), (SAMPLES_CLASS, "sample 11"), (SAMPLES_CLASS, "sample 12"),
        (SAMPLES_CLASS, "sample 13"), (LAYERS_CLASS, "conv0"), (LAYERS_CLASS, "conv1"),
        (LAYERS_CLASS, READOUT_CASE), (CHECKS_CLASS, "provenance"), (CHECKS_CLASS, "fidelity")]
    assert all(len(c) == 0 for c in cases)  # no failure / skipped child
    suite = ET.fromstring(xml)[0]
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")} == {
        "tests": "9", "failures": "0", "errors": "0", "skipped": "0", "time": "2.250"}
    assert cases[0].get("time") == "0.562"  # reference + backend seconds per sample
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["timesteps"] == "8" and props["net_digest"] == "ab" * 32
    assert props["backend"] == "lava-0.10-loihi2simcfg-fixed_pt" and "shard" not in props
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ')


def test_failures_carry_the_first_difference():
    rep = _report(bad=True)
    rep["golden"] = {"ok": None, "message": "no golden file given"}
    cases = {(c.get("classname"), c.get("name")): c for c in _cases(junit_xml(rep))}
    bad = cases[(SAMPLES_CLASS, "sample 12")].find("failure")
    assert bad.get("message") == ("sample 12: node conv1, neuron (0, 2, 1): reference 4, "
                                  "backend 5, window step 3")
    detail = json.loads(bad.text)
    assert detail["earliest"]["node"] == "conv1" and detail["lava_step_in_slot"] == 5
    assert cases[(SAMPLES_CLASS, "sample 11")].find("failure") is None
    layer = cases[(LAYERS_CLASS, "conv1")].find("failure").get("message")
    assert layer.startswith("node conv1: spike counts differ (17 spikes in total in the reference, 18 on the backend)")
    assert "first: sample 12: node conv1, neuron (0, 2, 1)" in layer
    assert cases[(LAYERS_CLASS, "conv0")].find("failure") is None
    assert cases[(CHECKS_CLASS, "fidelity")].find("failure").get("message") == "fidelity: agreement 0.91 < 0.97"
    assert cases[(CHECKS_CLASS, "golden")].find("skipped").get("message") == "no golden file given"
    suite = ET.fromstring(junit_xml(rep))[0]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("10", "3", "1")


def test_readout_failure_names_the_readout_difference():
    rep = _report()
    rep["readout_equal"] = False
    rep["per_sample"][1] = {"sample": 11, "equal": False,
                            "first": {"sample": 11, "node": "readout", "neuron": [3], "reference": -7, "lava": -5}}
    cases = {c.get("name"): c for c in _cases(junit_xml(rep))}
    msg = cases[READOUT_CASE].find("failure").get("message")
    assert msg == "readout potentials differ; first: sample 11: node readout, neuron (3,): reference -7, " \
                  "backend -5"
    assert cases["sample 11"].find("failure") is not None


def test_deterministic_and_json_round_trip(tmp_path):
    rep = _report(bad=True)
    a = junit_xml(rep)
    assert junit_xml(copy.deepcopy(rep)) == a
    assert junit_xml(json.loads(json.dumps(rep))) == a  # the dict as read back from verify.json
    write_junit(tmp_path / "v.xml", rep)
    assert (tmp_path / "v.xml").read_bytes() == a.encode("utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["v.xml"]  # atomic: no temporary left behind
    rep["per_sample"][0]["sample"] = 99
    assert junit_xml(rep) != a


def test_junitparser_reads_it_back(tmp_path):
    path = tmp_path / "verify.xml"
    write_junit(path, _report(bad=True), suite_name="my net")
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].name == "my net"
    s = suites[0]
    assert (s.tests, s.failures, s.errors, s.skipped) == (9, 3, 0, 0)
    assert s.time == pytest.approx(2.25)
    results = {(c.classname, c.name): c.result for c in s}
    assert len(results) == 9
    failing = sorted(k for k, r in results.items() if any(isinstance(x, Failure) for x in r))
    assert failing == [(CHECKS_CLASS, "fidelity"), (LAYERS_CLASS, "conv1"), (SAMPLES_CLASS, "sample 12")]
    msg = results[(SAMPLES_CLASS, "sample 12")][0].message
    assert msg.startswith("sample 12: node conv1, neuron (0, 2, 1): reference 4")
    assert not any(isinstance(x, Skipped) for r in results.values() for x in r)


def test_odd_node_names_are_escaped():
    rep = _report(bad=True)
    weird = 'a<b>&"c"\x01'
    rep["layers"][1]["node"] = weird
    rep["per_sample"][2]["first"] = {**rep["per_sample"][2]["first"], "node": weird}
    xml = junit_xml(rep)
    names = [c.get("name") for c in _cases(xml)]
    assert 'a<b>&"c"\ufffd' in names
    assert JUnitXml.fromstring(xml.encode("utf-8")) is not None


@pytest.mark.parametrize("key", ["per_sample", "layers", "readout_equal", "backend"])
def test_not_a_verify_report_is_refused_naming_the_key(key):
    rep = _report()
    del rep[key]
    with pytest.raises(NaDeployError, match=f"no '{key}'"):
        junit_xml(rep)
    with pytest.raises(NaDeployError, match="allowed: a verify report dict"):
        junit_xml([rep])
    rep = _report()
    rep["fidelity"] = "ok"
    with pytest.raises(NaDeployError, match=r"report\['fidelity'\] is not a check section"):
        junit_xml(rep)


def _shard(ids: list, i: int, n: int) -> dict:
    rep = _report()
    rep.update(samples=len(ids), sample_ids=ids, shard=f"{i}/{n}",
               per_sample=[{"sample": k, "equal": True, "first": None} for k in ids])
    return rep


def test_merged_shard_reports_name_a_missing_shard():
    from na_deploy.verify.shards import merge_reports

    parts = [_shard([0, 3], 1, 3), _shard([1, 4], 2, 3), _shard([2], 3, 3)]
    cases = {c.get("name"): c for c in _cases(junit_xml(merge_reports(parts)))}
    assert [k for k in cases if k.startswith("sample ")] == [f"sample {k}" for k in range(5)]
    assert cases["shards"].get("classname") == CHECKS_CLASS and cases["shards"].find("failure") is None
    cases = {c.get("name"): c for c in _cases(junit_xml(merge_reports(parts[:2])))}
    assert cases["shards"].find("failure").get("message") == "shards: 1 of 3 missing: 3/3"
    assert "sample 2" not in cases


@pytest.mark.lava
def test_real_verify_report_with_an_injected_fault():
    """verify on Lava with one hidden conv weight changed after build (the on_build fault hook): the JUnit
    failures name the samples and the node that verify found different; the other node's case passes."""
    pytest.importorskip("na_deploy.hw_targets.loihi2.lava.backend")
    from na_deploy.hw_targets.loihi2 import TARGET
    from na_deploy.testing import random_inputs, random_intnet
    from na_deploy.verify.bit_exact import verify

    rng = np.random.default_rng(12)
    net = random_intnet(rng, "conv_chain", size=4)
    while len(net.nodes) < 2:
        net = random_intnet(rng, "conv_chain", size=4)
    x = random_inputs(rng, net, 3)
    node = net.nodes[1].name

    def perturb(graph):
        w = graph.synapses[node][0].weight.init
        w[...] = np.where(w > 0, -w, 100)  # a big change: certain to alter spikes

    rep = verify(net, x, 3, TARGET, TARGET.backend(), on_build=perturb, sample_ids=[5, 6, 7]).to_dict()
    assert not rep["equal"]
    cases = {(c.get("classname"), c.get("name")): c for c in _cases(junit_xml(rep))}
    for r in rep["per_sample"]:
        f = cases[(SAMPLES_CLASS, f"sample {r['sample']}")].find("failure")
        assert (f is None) == r["equal"]
        if f is not None:
            assert f.get("message").startswith(f"sample {r['sample']}: node {r['first']['node']}, neuron ")
    assert cases[(LAYERS_CLASS, net.nodes[0].name)].find("failure") is None
    assert cases[(LAYERS_CLASS, node)].find("failure") is not None
    assert sorted(c[1] for c in cases if c[0] == SAMPLES_CLASS) == ["sample 5", "sample 6", "sample 7"]
