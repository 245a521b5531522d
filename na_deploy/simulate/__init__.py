"""Simulation of a FloatNet in torch, CPU or CUDA (contract C2-C4, C7): as the quantized ANN and as the float SNN.

Modules:
  ann        the FloatNet as the quantized ANN it came from (`ann_forward`, `ann_accuracy`, `argmax_lowest`)
  float_snn  the float IF SNN, unpipelined (`simulate_float` -> `FloatSimResult`)
  torch_ops  the IR's synaptic ops as batched torch functions (`compile_op`), shared with the fast reference

The integer SNN is a target's business (its bit-exact reference, `Target.reference_simulate`).
"""
from na_deploy.simulate.ann import ann_accuracy, ann_forward, argmax_lowest
from na_deploy.simulate.float_snn import FloatSimResult, simulate_float

__all__ = ["ann_forward", "ann_accuracy", "argmax_lowest", "simulate_float", "FloatSimResult"]
