"""The one intermediate representation every stage after training consumes (docs/contract.md: "The one IR").

A network is a DAG: one `InputNode`, neuron nodes in topological order, and one readout node.
Each neuron/readout node has one or more `Synapse`s, each from one source node through one synaptic
op (`Conv2d` | `Dense` | `AvgPool2d` | `Identity`). Residual add = two synapses into one node.

Two flavours with the same topology:

* `FloatNet` (from torch, BN folded; `NeuronNode`, `ReadoutNode`), float weights.
* `IntNet` (after a target's fixed point; `IntNeuronNode`, `IntReadoutNode`), integer weights,
  a per-synapse power-of-two exponent, integer threshold / bias / pre-charge and a per-node `scale`
  (the real value of one integer unit of that node's membrane; all inputs of a node share it, C5).

Semantics (contract C2-C4, C7), per sample, T time steps
---------------------------------------------------------------
Payload of a source: the input node sends the raw integer pixels `x` (0..255, graded) every step (C4);
a neuron node sends its spike z in {0, 1}; in the FloatNet a spike carries the value `threshold`.

FloatNet as a quantized ANN (eval):   a_input = x;  u_m = sum_i op_i(a_src_i) + b_m;
    a_m = s_m * n_m,  n_m = clip(floor(u_m / s_m + 1/2), 0, p_m),  s_m = threshold_m / p_m
    (n_m: the activation level, round half up, C1)
    logits = sum_i op_i(a_src_i) + b_readout.
FloatNet as an SNN (unpipelined, C2):  I_m(t) = sum_i op_i(payload_src_i(t)) + b_m,
    v_m(0) = precharge_m; v += I; (v, z) = neuron_m.fire_and_reset(v, threshold)   (t = 1..T)
    (mode "subtract", C2: z = [v >= threshold]; v -= z * threshold; see `na_deploy.ir.neuron`)
    readout: V = sum_t I_R(t); class = argmax V, ties to the lowest index (C7).
IntNet (integers, exact):  I_m(t) = sum_i shift(op_i(payload_src_i(t)), exponent_i) + bias_mant << bias_exp
    with shift(y, e) = y << e for e >= 0 and y >> -e (arithmetic, floor) for e < 0; the same update.
Pipelined time (C3): node depth d (input 0, node = 1 + depth of its sources, which must all agree);
    node m is live only in its window of global steps [d_m + 1, d_m + T] and there sees the payloads its
    sources emitted one step earlier. This equals the unpipelined run above exactly. (The window starts of
    every mode, "accumulate" and offset calibration included: `timing.window_starts`.)
Spike counts are counted over each node's window; the readout's final potential is V.

Modules: `ops` (synaptic ops, `Synapse`), `neuron` (neuron models), `nodes`, `graph` (FloatNet / IntNet),
`timing` (window starts, steps per inference, the offset_steps rules; C3), `offset_calibration` (C2's option).
The integer arithmetic (`shift`, the register wrap) is `na_deploy.integer`.
Files: `na_deploy.io.save_net` / `load_net` (the IR never imports its file format).
"""
from na_deploy.ir.graph import FloatNet, IntNet, replace_nodes
from na_deploy.ir.neuron import (GRADED, NEURON_MODELS, SUBTRACT, ZERO, NeuronModel, ResetToZeroIF, SubtractIF,
                                 neuron_model)
from na_deploy.ir.nodes import (INPUT_NAME, ROLES, InputNode, IntNeuronNode, IntReadoutNode, NeuronNode, ReadoutNode,
                                node_kind)
from na_deploy.ir.ops import OP_TYPES, AvgPool2d, Conv2d, Dense, Identity, Op, Shape, Synapse

__all__ = [
    "Conv2d", "Dense", "AvgPool2d", "Identity", "Op", "OP_TYPES", "Shape", "Synapse",
    "NeuronModel", "SubtractIF", "SUBTRACT", "ResetToZeroIF", "ZERO", "GRADED", "NEURON_MODELS", "neuron_model",
    "INPUT_NAME", "ROLES", "InputNode", "NeuronNode", "ReadoutNode", "IntNeuronNode", "IntReadoutNode", "node_kind",
    "FloatNet", "IntNet", "replace_nodes",
]
