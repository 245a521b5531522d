"""na-deploy: noise-adaptor QAT -> IF SNN -> Loihi 2 fixed point -> Lava, verified bit-exact.

The packages, stage by stage; a module imports only its own stage and those above it (tests/test_layering.py):
  errors, checks, rounding, atomic, device   the shared base: error types, argument checks, rounding, files
  ir, protocols      the one IR (FloatNet, IntNet) and the Target / Backend protocols a hardware target implements
  io                 files of the IR: `*.nad.h5`, NIR, provenance records
  data               data sets of raw uint8 pixels and seeded batches
  training           QuantReLU with the noise adaptor, full-precision training and QAT, checkpoints
  simulate           the quantized ANN and the float SNN of a FloatNet, in torch
  convert            torch QAT model -> FloatNet (its self-check runs simulate)
  evaluate           accuracy vs T, occasional noise, plots
  verify, testing    a target's reference vs a backend, provenance, fidelity, golden traces; `assert_bit_exact`
  pipeline           the whole job, its variants and reports
Installed beside them: `na_deploy.models` (the torch models), `na_deploy.hw_targets` (targets: Loihi 2 and its
backends), `na_deploy.cli` (the `na-deploy` command). This module imports nothing: `na-deploy --help` stays instant.
"""
__version__ = "0.1.0"
