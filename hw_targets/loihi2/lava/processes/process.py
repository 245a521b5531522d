"""Lava Processes for the Loihi 2 target (docs/contract.md: Lava facts; contract C2-C4, C6).

Lava has no neuron that resets by subtraction, so the IntNet's integrate-and-fire population, its readout
and its graded pixel source are defined here; their `fixed_pt` models live in `models.py`.
Lava imports every module of this folder to find process models: nothing here may have import side
effects or import torch (models.py imports only this module, by its absolute name).

Time (C3), shared by the three processes. Lava's `time_step` t is 1-based. One sample occupies a slot of
L = T + D steps (D: the readout's depth); sample k = (t - 1) // L, local step tau = (t - 1) % L + 1.
A population of depth d is live in its window tau in [d + 1, d + T]: pre-charged (or zeroed, readout) at
tau = d + 1, held outside (no bias, no integration, no spikes); its per-sample result (spike counts /
final potential) leaves through the `result_out` external pipe at tau = d + T. Past the last sample
(k >= n_samples) every population idles.

Here d is the population's window *start* (the graph builder computes it: the input's hop count, plus T for
every `accumulate` population on the path, whose spikes leave T steps late), and a population's window can
be longer than T (`window_span`):
* "accumulate": accumulate phase tau in [d + 1, d + T] (integrate, no spikes), fire phase [d + T + 1, d + 2T]
  (no integration, no bias: z = [v >= th], v <- v - z*th); the result leaves at tau = d + 2T.
* offset calibration (proc param offset_steps = rho > 0, "subtract" only): stage 1 tau in [d + 1, d + rho] from
  the pre-charge pc, then each neuron re-arms at pc + o*th, o = clip(floor(v_rho / th), -1, 1), and stage 2
  runs tau in [d + rho + 1, d + rho + T]; results (and the trace records) are stage 2's.
"""
from __future__ import annotations

import typing as ty

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from na_deploy.ir.neuron import neuron_model

MEMBRANE_BITS = 24  # Loihi 2 membrane width: v wraps (two's complement) like the reference simulator
# Neuron models (na_deploy.ir.neuron names) the SubtractiveIF process model runs; the Loihi 2 fit check lists the
# same names (Loihi2Limits.neuron_models). Another model needs its step checked against the reference first.
NEURON_MODELS = ("subtract", "negative", "accumulate", "graded")
SIGNED_MODELS = ("negative",)  # z in {-1, 0, +1}: consumers need graded (signed) messages
GRADED_MODELS = ("graded",)  # z = the input sum (24-bit signed graded spikes, contract C2 "Graded nodes")
OFFSET_MODELS = ("subtract",)  # models that may run two-stage offset calibration (offset_steps > 0)


def window_span(neuron: str, timesteps: int, offset_steps: int = 0) -> int:
    """Steps a population of this neuron model is live per sample: T, + the model's emission delay (T for
    the accumulate phase of "accumulate"), + rho (the offset-calibration stage 1)."""
    return int(timesteps) + neuron_model(neuron).emit_delay(int(timesteps)) + int(offset_steps)


def _window(depth: int, timesteps: int, slot: int, n_samples: int) -> np.ndarray:
    depth, timesteps, slot, n_samples = int(depth), int(timesteps), int(slot), int(n_samples)
    if timesteps < 1 or depth < 0 or slot < depth + timesteps or n_samples < 1:
        raise ValueError(f"bad window: depth={depth}, timesteps={timesteps}, slot={slot}, n_samples={n_samples} "
                         "(need T >= 1, depth >= 0, slot >= depth + T, n_samples >= 1)")
    return np.array([depth, timesteps, slot, n_samples], dtype=np.int64)


def _result_ports(proc: AbstractProcess, shape: tuple[int, ...], n_samples: int, timesteps: int,
                  record_steps: bool) -> None:
    """Host-facing outputs (Lava external pipes: whole arrays, unlike Var.get which moves one value per
    message): `result_out` carries one array per sample at its window end (buffer: `result_buffer` samples,
    default all of them; the host drains it between runs); `trace_out` (record_steps only) one array per
    window step."""
    proc.result_out = OutPort(shape=shape)
    proc.result_out.flag_external_pipe(buffer_size=int(n_samples))
    proc.trace_out = OutPort(shape=shape)
    if record_steps:
        proc.trace_out.flag_external_pipe(buffer_size=int(n_samples) * int(timesteps))


class SubtractiveIF(AbstractProcess):
    """Integer integrate-and-fire population (C2, C5); its neuron model is a proc param, by name.

    In its window, per step:  v <- wrap24(v + a_in + bias);  (v, z) <- model.fire_and_reset(v, vth);
    s_out = z. Models (`NEURON_MODELS`):
    "subtract":   z = [v >= vth], v <- v - z * vth.
    "negative":   z = +1 if v >= vth (v <- v - vth); -1 if v < 0 and c > 0 (v <- v + vth); else 0;
                  c <- c + z (c: the window's net count, `spike_count`); s_out carries the signed z, so every
                  consumer's connection process reads graded messages (the builder sets num_message_bits).
    "accumulate": the two phases of the module doc; only the fire phase spikes.
    "graded":     a graded node (no threshold, no state): z = v = a_in + bias, v <- 0; s_out carries z as a
                  24-bit signed graded spike; spike_count is the window's sum of payloads.
    offset_steps = rho > 0 ("subtract"): the two stages of the module doc.
    At window start v = precharge, spike_count = event_count = 0. Shapes are Lava layouts ((W, H, C) maps).

    Vars: v, vth (1,), bias (per neuron, = bias_mant << bias_exp), precharge (1,), window (4,) =
    (start d, T, slot, n_samples), spike_count (net count of the current / latest window), event_count
    (messages sent per sample: sum |z| over both stages).
    Outputs to the host: result_out (spike_count at each window end), trace_out (z every step of the
    counted window, only with record_steps), event_out (event_count at each window end; only for signed
    models and rho > 0, where it differs from the count).
    """

    def __init__(self, *, shape: tuple[int, ...], vth: int, bias: np.ndarray, precharge: int, depth: int,
                 timesteps: int, slot: int, n_samples: int, neuron: str = "subtract", record_steps: bool = False,
                 result_buffer: ty.Optional[int] = None, offset_steps: int = 0,
                 name: ty.Optional[str] = None) -> None:
        shape = tuple(int(s) for s in shape)
        if neuron not in NEURON_MODELS:
            raise ValueError(f"{name or 'SubtractiveIF'}: neuron model {neuron!r} has no Lava process model; "
                             f"allowed: {', '.join(NEURON_MODELS)}")
        rho = int(offset_steps)
        if rho < 0 or (rho > 0 and neuron not in OFFSET_MODELS):
            raise ValueError(f"{name or 'SubtractiveIF'}: offset_steps {rho} with neuron model {neuron!r}; allowed: "
                             f"0, or >= 1 with {', '.join(OFFSET_MODELS)}")
        if slot < int(depth) + window_span(neuron, timesteps, rho):
            raise ValueError(f"{name or 'SubtractiveIF'}: slot {slot} is shorter than its window "
                             f"{int(depth)} + {window_span(neuron, timesteps, rho)}")
        events = neuron in SIGNED_MODELS or rho > 0
        super().__init__(shape=shape, neuron=str(neuron), record_steps=bool(record_steps), offset_steps=rho,
                         events=events, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.vth = Var(shape=(1,), init=int(vth))
        self.bias = Var(shape=shape, init=np.broadcast_to(np.asarray(bias, dtype=np.int64), shape).copy())
        self.precharge = Var(shape=(1,), init=int(precharge))
        self.window = Var(shape=(4,), init=_window(depth, timesteps, slot, n_samples))
        self.spike_count = Var(shape=shape, init=0)
        self.event_count = Var(shape=shape, init=0)
        _result_ports(self, shape, result_buffer or n_samples, timesteps, record_steps)
        self.event_out = OutPort(shape=shape)
        if events:
            self.event_out.flag_external_pipe(buffer_size=int(result_buffer or n_samples))


class Accumulator(AbstractProcess):
    """Readout: integer accumulator, no threshold, no spikes (C7).

    In its window, per step: v <- wrap24(v + a_in + bias); v = 0 at window start. result_out carries the
    final potential of each sample; trace_out (record_steps) v after every window step.
    """

    def __init__(self, *, shape: tuple[int, ...], bias: np.ndarray, depth: int, timesteps: int, slot: int,
                 n_samples: int, record_steps: bool = False, result_buffer: ty.Optional[int] = None,
                 name: ty.Optional[str] = None) -> None:
        shape = tuple(int(s) for s in shape)
        super().__init__(shape=shape, record_steps=bool(record_steps), name=name)
        self.a_in = InPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.bias = Var(shape=shape, init=np.broadcast_to(np.asarray(bias, dtype=np.int64), shape).copy())
        self.window = Var(shape=(4,), init=_window(depth, timesteps, slot, n_samples))
        _result_ports(self, shape, result_buffer or n_samples, timesteps, record_steps)


class GradedSource(AbstractProcess):
    """The input node (C4): sends the raw integer pixels of sample k as graded spikes on local steps 1..T
    of its slot, zeros otherwise. `data` (n_samples, *shape) in Lava layout; every payload must fit in
    `num_message_bits` unsigned bits (checked in the model, every step it sends)."""

    def __init__(self, *, data: np.ndarray, timesteps: int, slot: int, num_message_bits: int = 8,
                 name: ty.Optional[str] = None) -> None:
        data = np.asarray(data)
        shape = tuple(int(s) for s in data.shape[1:])
        super().__init__(shape=shape, num_message_bits=int(num_message_bits), name=name)
        self.s_out = OutPort(shape=shape)
        self.data = Var(shape=data.shape, init=data.astype(np.int64))
        self.window = Var(shape=(4,), init=_window(0, timesteps, slot, data.shape[0]))
