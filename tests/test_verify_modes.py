"""verify (C6) on the modes whose messages are not their counts: event counts are compared too, and a net whose
counts at T are not prefixes of a longer run is not step-located (it says so instead of naming a wrong step)."""
from __future__ import annotations

import dataclasses

import numpy as np

from na_deploy.ir import neuron_model
from na_deploy.protocols import Trace
from na_deploy.testing import random_intnet
from na_deploy.verify.bit_exact import first_difference, locate_step, prefix_causal


def _trace(events):
    return Trace(3, {"a": np.array([[1, 2]])}, np.array([[5, 6]]), event_counts=events)


def test_event_counts_are_compared():
    assert first_difference(_trace({"a": np.array([[1, 4]])}), _trace({"a": np.array([[1, 4]])})) is None
    d = first_difference(_trace({"a": np.array([[1, 4]])}), _trace({"a": np.array([[1, 2]])}))
    assert d == {"sample": 0, "node": "a", "neuron": (1,), "what": "event count", "a": 4, "b": 2}
    assert first_difference(_trace(None), _trace(None)) is None


def test_windowed_and_offset_nets_are_not_step_located():
    net = random_intnet(np.random.default_rng(0), "conv_chain")
    assert prefix_causal(net)
    acc = dataclasses.replace(net, nodes=[dataclasses.replace(n, neuron=neuron_model("accumulate"))
                                          for n in net.nodes])
    off = dataclasses.replace(net, meta={**net.meta, "offset_steps": 2})
    for bad in (acc, off):
        assert not prefix_causal(bad)
        r = locate_step(bad, None, 4, net.nodes[0].name, (0,), target=None, backend=None)
        assert r["step"] is None and "not located" in r["step_note"]
