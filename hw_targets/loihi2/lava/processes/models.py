"""`fixed_pt` Lava process models for the processes in `process.py` (numpy only: torch inside a forked
Lava process hangs; no import side effects: Lava executes this module while searching for models).

Each model reproduces the IntNet integer semantics of `na_deploy.ir` (the executable definition is
`hw_targets/loihi2/reference/slow.py`) step by step, with the window logic of `process.py`'s docstring.
Absolute imports only: Lava also executes this file as a stand-alone module named "models".

Errors: Lava's runtime waits for every process to finish a step, and a process blocked on `recv` from a
failed upstream process never does (the run hangs). So a model that fails still sends a zero payload
on its OutPort before re-raising; the runtime then reports the error and the backend reads the real
exception from the actor that raised (see `hw_targets/loihi2/lava/runtime.py`, `run_steps_or_raise`).

The neuron step comes from the node's neuron model (`na_deploy.ir.neuron`, numpy-only code; `na_deploy.ir`
never imports torch), named by the population's proc param `neuron`.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from na_deploy.hw_targets.loihi2.lava.processes.process import (MEMBRANE_BITS, Accumulator, GradedSource, SubtractiveIF,
                                                                window_span)
from na_deploy.integer import wrap_signed
from na_deploy.ir.neuron import neuron_model
from na_deploy.ir.offset_calibration import offset_start


def slot_position(time_step: int, window: np.ndarray) -> tuple[int, int, int, int, int]:
    """(sample k, local step tau, depth d, T, n_samples) for Lava's 1-based time step, with
    window = (d, T, L, n_samples): k = (t-1) // L, tau = (t-1) % L + 1."""
    d, T, L, n = (int(x) for x in window)
    return (time_step - 1) // L, (time_step - 1) % L + 1, d, T, n


def live(k: int, tau: int, d: int, T: int, n_samples: int) -> bool:
    """True inside the window [d + 1, d + T] of a sample that exists; past the last sample slot a
    population idles like outside its window."""
    return k < n_samples and d + 1 <= tau <= d + T


@implements(proc=SubtractiveIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySubtractiveIFModelFixed(PyLoihiProcessModel):
    """Integer IF in its window (C3) with the node's neuron model (C2), `process.SubtractiveIF`:
    v <- wrap24(v + a_in + bias); (v, z) <- model.fire_and_reset(v, vth)
    ("subtract": z = v >= vth; v <- v - z * vth; "negative", "accumulate" and offset calibration: see
    SubtractiveIF and the process module doc)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=2)
    result_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    trace_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=2)
    event_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    precharge: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    window: np.ndarray = LavaPyType(np.ndarray, np.int64)
    spike_count: np.ndarray = LavaPyType(np.ndarray, np.int64)
    event_count: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        a_in = self.a_in.recv().astype(np.int64)
        try:
            z = self.update(a_in)
        except Exception:
            self.s_out.send(np.zeros(self.v.shape, dtype=np.int32))  # downstream must not block (module doc)
            raise
        self.s_out.send(z.astype(np.int32))

    def update(self, a_in: np.ndarray) -> np.ndarray:
        """One step of the population; returns the spikes z (int64: 0/1, or -1/0/1 for a signed model)."""
        k, tau, d, T, n = slot_position(self.time_step, self.window)
        model = neuron_model(self.proc_params.get("neuron", "subtract"))
        rho = int(self.proc_params.get("offset_steps", 0))
        span = window_span(model.name, T, rho)
        if k >= n or not d + 1 <= tau <= d + span:
            return np.zeros(self.v.shape, dtype=np.int64)
        th, step = int(self.vth[0]), tau - d  # step: 1 .. span within this sample's window
        if step == 1:  # re-arm at the window start of every sample
            self.v[...] = int(self.precharge[0])
            self.spike_count[...] = 0
            self.event_count[...] = 0
        if rho and step == rho + 1:  # stage 2 of offset calibration: re-arm at pc + o * th, count afresh
            self.v[...] = offset_start(self.v, int(self.precharge[0]), th)  # o = clip(floor(v_rho/th), -1, 1)
            self.spike_count[...] = 0
        delay = model.emit_delay(T)  # "accumulate": integrate only in steps 1..T, then fire only
        z = self.step(model, a_in, th, integrate=not delay or step <= delay, fire=not delay or step > delay)
        self.event_count += np.abs(z)
        if step > span - T:  # the window the result counts: stage 2 / the fire phase / all of it
            self.spike_count += z
            if self.proc_params.get("record_steps", False):
                self.trace_out.send(z.astype(np.int32))
        if step == span:
            self.result_out.send(self.spike_count.astype(np.int32))
            if self.proc_params.get("events", False):
                self.event_out.send(self.event_count.astype(np.int32))
        return z

    def step(self, model, a_in: np.ndarray, th: int, integrate: bool, fire: bool) -> np.ndarray:
        """One step of the node's model on v: integrate (v <- wrap24(v + a_in + bias)) and / or fire and
        reset (the model's `fire_and_reset`, with the window's running net count for a stateful model such
        as "negative"); returns z (zeros when it does not fire)."""
        v = wrap_signed(self.v + a_in + self.bias, MEMBRANE_BITS) if integrate else self.v.copy()
        if not fire:
            self.v[...] = v
            return np.zeros(self.v.shape, dtype=np.int64)
        v, z = model.fire_and_reset(v, th, self.spike_count.copy() if model.stateful else None)
        self.v[...] = v
        return np.asarray(z).astype(np.int64)


@implements(proc=Accumulator, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyAccumulatorModelFixed(PyLoihiProcessModel):
    """Readout (C7): v <- wrap24(v + a_in + bias) in its window, v = 0 at window start."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    result_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    trace_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    window: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        a_in = self.a_in.recv().astype(np.int64)
        k, tau, d, T, n = slot_position(self.time_step, self.window)
        if not live(k, tau, d, T, n):
            return
        if tau == d + 1:
            self.v[...] = 0
        self.v[...] = wrap_signed(self.v + a_in + self.bias, MEMBRANE_BITS)
        if self.proc_params.get("record_steps", False):
            self.trace_out.send(self.v.astype(np.int32))
        if tau == d + T:
            self.result_out.send(self.v.astype(np.int32))


@implements(proc=GradedSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGradedSourceModelFixed(PyLoihiProcessModel):
    """Input node (C4): payload = data[k] on local steps 1..T, else 0 (graded, unsigned, num_message_bits)."""

    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    data: np.ndarray = LavaPyType(np.ndarray, np.int64)
    window: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def run_spk(self) -> None:
        try:
            out = self.payload()
        except Exception:
            self.s_out.send(np.zeros(self.data.shape[1:], dtype=np.int32))  # downstream must not block
            raise
        self.s_out.send(out.astype(np.int32))

    def payload(self) -> np.ndarray:
        """This step's graded payload (int64, Lava layout)."""
        k, tau, _, T, n = slot_position(self.time_step, self.window)
        if not live(k, tau, 0, T, n):
            return np.zeros(self.data.shape[1:], dtype=np.int64)
        out = self.data[k]
        bits = int(self.proc_params.get("num_message_bits", 8))
        if out.min() < 0 or out.max() >= (1 << bits):
            raise ValueError(f"{self.proc_params.get('name') or 'GradedSource'}: sample {k} has payloads in "
                             f"[{int(out.min())}, {int(out.max())}]; a graded spike carries "
                             f"{bits} unsigned bits, allowed 0..{(1 << bits) - 1}")
        return out
