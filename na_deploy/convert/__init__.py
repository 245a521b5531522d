"""torch QAT model -> FloatNet (contract C2, C3, C4, C7).

`to_floatnet(model, input_shape, channel_scale)` traces the eval-mode model with torch.fx (QuantReLU kept
as a leaf) and walks the graph once. Every tensor between two quantized activations is an *affine map of
earlier activations*: a set of terms (one per source activation, each a chain of linear ops composed into
one IR op) plus a bias map. A QuantReLU turns the map into a `NeuronNode`; the model output into the
`ReadoutNode`.

Modules:
  api           the entry points: `to_floatnet`, `convert_checkpoint` (with provenance, C8), `check_against_torch`
  fx_walk       the torch.fx tracer (`trace_model`) and the node-by-node converter
  affine        BN folding (`fold_batchnorm`, `bn_affine`) and the affine-map algebra, no fx
  delays        `balance_delays`: relay nodes so every path into a node has the same hop count (C3)
  neuron_modes  the neuron modes of a converted net (`apply_neuron_mode`, `convert_inference_mode`, C2)
  bias_shift    Datta et al.'s BN-bias shift in place of the pre-charge (`apply_bias_shift`)

Rules (each one exact):
* BN folding (`fold_batchnorm`): y = g (Wx + b - mu)/sqrt(var + eps) + beta
      -> W' = W * g/sqrt(var+eps) (per output channel),  b' = (b - mu) * g/sqrt(var+eps) + beta.
  BN must directly follow a Conv2d / Linear (a BN on a residual sum or on an activation is refused).
* QuantReLU(p, s) -> NeuronNode: threshold th = p*s, p levels, pre-charge th/2, bias = folded bias (C2).
  A spike of that node carries the value th (so weights out of it stay W; the ANN value is s*n).
* Residual add (`+`, torch.add, operator.add / iadd, Tensor.add): the terms of both branches become
  synapses of one node (identity branch -> Identity(1.0), conv+BN branch -> Conv2d); the sum must feed a
  QuantReLU (or the model output) directly. Two paths from the *same* source (relu(conv(a) + a)) merge into
  one synapse when exact (`_merge_terms`: convs of one stride in a common window, or summed Dense matrices).
* Average pooling: AvgPool2d(k, stride k) then Conv2d(K, stride s, pad P) is one Conv2d with kernel K*k,
  stride s*k, pad P*k and weights W/k^2 repeated k x k, exact when the pooled map's H, W are divisible by k;
  pooling followed (through Flatten) by a Linear is one Dense (the composed matrix, e.g. global pooling ->
  W/(H*W) repeated); consecutive non-overlapping pools compose (k1 then k2 = k1*k2). A pool that feeds a
  QuantReLU directly becomes the IR's AvgPool2d op (weight 1/(kh*kw)); anything else is refused.
  AdaptiveAvgPool2d is a plain pool when the map divides evenly into its output size.
* Flatten / view / reshape to (B, -1) are free (Dense uses C-order flatten); Dropout / Identity vanish.
* The last Linear (+ optional BN1d) -> ReadoutNode; class = argmax of its potential (C7).
* Normalisation (C4): x_norm = x_uint8 * channel_scale_c is folded into the first layer's weights
  (W[:, c] *= channel_scale_c), so the FloatNet input is the raw uint8 image.
* MaxPool, ReLU and other activations, any other op: ConversionError naming the fx node / module path.
Afterwards `na_deploy.convert.delays.balance_delays` inserts relays so all paths into a node have equal hop counts
(C3), and a self-check runs the FloatNet as a quantized ANN against the torch model (float64, random
pixels) so a misread op can never pass silently.
"""
from na_deploy.convert.affine import bn_affine, fold_batchnorm
from na_deploy.convert.api import check_against_torch, convert_checkpoint, to_floatnet
from na_deploy.convert.bias_shift import apply_bias_shift
from na_deploy.convert.delays import balance_delays
from na_deploy.convert.fx_walk import trace_model
from na_deploy.convert.neuron_modes import NEURON_MODES, apply_neuron_mode, convert_inference_mode

__all__ = ["to_floatnet", "convert_checkpoint", "fold_batchnorm", "bn_affine", "trace_model",
           "check_against_torch", "balance_delays", "NEURON_MODES", "apply_neuron_mode", "convert_inference_mode",
           "apply_bias_shift"]
