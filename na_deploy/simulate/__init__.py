"""Simulation in torch: the quantized ANN and the float SNN (C2-C4, C7)."""
