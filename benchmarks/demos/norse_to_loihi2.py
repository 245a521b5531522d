"""A net made in Norse, written by Norse's own NIR writer, brought to Loihi 2 by na-deploy (issue 10 acceptance):

  1. a ReLU MLP 64-32-16-10 trained on the flattened 8x8 digits (pixels / 255) for a few epochs in torch;
  2. its weights in a leak-free Norse net (Linear -> IAFCell, thresholds from the 99th percentile of each
     layer's activations; the last IAFCell's summed input is the readout), written with `norse.torch.to_nir`
     and `nir.write`;
  3. `na_deploy.io.load_nir` (what `na-deploy import` runs) -> FloatNet (mode zero) -> Loihi 2 fixed point for T
     -> `verify`: the stock-LIF Lava backend against the reference on N test images, every layer;
  4. accuracy of Norse's own simulation, our float SNN and our integer SNN at T.

    .venv/bin/python benchmarks/demos/norse_to_loihi2.py [--samples 50] [--timesteps 8] [--out model.nir]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nir
import numpy as np
import torch

from na_deploy.data.arrays import load_dataset
from na_deploy.simulate.float_snn import simulate_float
from na_deploy.hw_targets.loihi2 import TARGET
from na_deploy.io.nir_io import load_nir
from na_deploy.verify.bit_exact import verify


def train_mlp(x: torch.Tensor, y: torch.Tensor, epochs: int = 60) -> torch.nn.Sequential:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 10))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(mlp(x), y).backward()
        opt.step()
    return mlp


def norse_net(mlp: torch.nn.Sequential, x: torch.Tensor):
    """Rate-coded conversion (Diehl et al.'s data-based normalisation): layer l's threshold is the 99th percentile
    of its ReLU activations on the training images, and the next layer's weights are multiplied by it."""
    from norse.torch import SequentialState
    from norse.torch.module.iaf import IAFCell, IAFParameters

    layers, scale, h = [], 1.0, x
    lin = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, m in enumerate(lin):
            new = torch.nn.Linear(m.in_features, m.out_features)
            new.weight.copy_(m.weight * scale)
            h = m(h)
            if i + 1 < len(lin):
                h = torch.relu(h)
                th = float(torch.quantile(h.flatten(), 0.99).clamp_min(1e-3))
            else:
                th = 1e9  # the readout: its summed input is the class score, it never needs to fire
            new.bias.copy_(m.bias)
            layers += [new, IAFCell(IAFParameters(v_th=torch.full((m.out_features,), th)))]
            scale = th
    return SequentialState(*layers)


def norse_accuracy(net, x: np.ndarray, y: np.ndarray, T: int) -> float:
    """Norse's own simulation: class = argmax of the summed input of the last IAFCell over T steps."""
    last = [m for m in net if type(m).__name__ == "IAFCell"][-1]
    total = {}
    hook = last.register_forward_pre_hook(lambda m, i: total.__setitem__("v", total.get("v", 0) + i[0]))
    with torch.no_grad():
        xs, state = torch.as_tensor(x, dtype=torch.float32) / 255, None
        for _ in range(T):
            _, state = net(xs, state)
    hook.remove()
    return float((total["v"].argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--timesteps", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from norse.torch import to_nir as norse_to_nir

    ds, T = load_dataset(None), args.timesteps
    xtr = torch.as_tensor(ds.x_train.reshape(len(ds.x_train), -1), dtype=torch.float32) / 255
    mlp = train_mlp(xtr, torch.as_tensor(ds.y_train))
    net = norse_net(mlp, xtr)
    path = Path(args.out or Path(tempfile.mkdtemp()) / "norse_mlp.nir")
    nir.write(path, norse_to_nir(net, torch.zeros(64)))
    fnet = load_nir(path)
    x, y = ds.x_test.reshape(len(ds.x_test), -1), ds.y_test
    inet = TARGET.to_fixed_point(fnet, max_timesteps=T)
    fl = simulate_float(fnet, x, [T], progress=False)
    ref = TARGET.reference_simulate(inet, x, T)
    print(f"Norse MLP written by norse.torch.to_nir -> {path}; imported as {len(fnet.nodes)} IF layers + readout")
    print(f"accuracy on {len(y)} test images at T = {T}: Norse {norse_accuracy(net, x, y, T):.4f}, "
          f"our float SNN {float((fl.predictions[T] == y).mean()):.4f}, "
          f"integer SNN (Loihi 2 reference) {float((ref.predictions == y).mean()):.4f}")
    rep = verify(inet, x[:args.samples], T, TARGET, TARGET.backend(None, inet))
    print(f"verify on {rep.samples} samples, backend {rep.backend}: mismatching samples {rep.mismatching_samples}, "
          f"readout equal {rep.readout_equal}; layers " + ", ".join(
              f"{layer['node']} {layer['reference']}/{layer['lava']}" for layer in rep.layers))


if __name__ == "__main__":
    main()
