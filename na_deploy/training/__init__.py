"""Training (contract C1): full precision, then quantization-aware training with the noise adaptor.

Modules:
  quantizer    `QuantReLU`: the quantized ReLU with the noise adaptor (C1)
  surgery      `quantize_model`: ReLU -> QuantReLU, max-pool -> average pool; `calibrate_step_sizes`
  loop         `train_full_precision`, `train_qat`, `resume_training`: SGD, cosine schedule, checkpoints
  checkpoint   `Checkpoint`, `save_checkpoint` / `load_checkpoint`: one torch.save'd dict, written atomically
  l1_sparsity  Datta et al.'s L1 activation regularizer (`ActivationL1`, `quantize --l1-sparsity`)
  distributed  DDP under torchrun (gloo / nccl); a no-op in one process
"""
from na_deploy.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from na_deploy.training.l1_sparsity import ActivationL1
from na_deploy.training.loop import TrainResult, resume_training, train_full_precision, train_qat
from na_deploy.training.quantizer import QuantReLU
from na_deploy.training.surgery import calibrate_step_sizes, quantize_model

__all__ = ["QuantReLU", "quantize_model", "calibrate_step_sizes", "train_full_precision", "train_qat",
           "resume_training", "TrainResult", "Checkpoint", "load_checkpoint", "save_checkpoint", "ActivationL1"]
