"""Evaluation: accuracy vs time steps, occasional noise, plots."""
