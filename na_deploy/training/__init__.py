"""Training: the quantizer with the noise adaptor (C1), model surgery, L1 sparsity, the training loop, checkpoints, DDP."""
