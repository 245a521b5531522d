"""Issue 19 item 2, ShuffleNet v2: channel split (chunk / split / narrow / slices) and channel shuffle (a reshape
sequence that only permutes channels) as exact synapses (docs/contract.md C2 "Channel split and shuffle";
na_deploy/convert/fx_shapes.py, compose.channel_select), with static shape arithmetic (x.size(), c // g) in the
fx walk. Each net: quantize -> FloatNet (float64 self-check) -> Loihi 2 fixed point that fits -> the reference
runs (-> Lava bit-exact on 1 sample); a reshape that is no channel gather is refused in one line."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from na_deploy.convert import to_floatnet
from na_deploy.errors import ConversionError
from na_deploy.training.surgery import calibrate_step_sizes, quantize_model
from helpers import deploy_random, random_qat  # tests/helpers.py


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ShuffleNet v2 channel shuffle, verbatim."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class Shuffle(nn.Module):
    """stem -> [chunk, branch on one half, cat, shuffle] x 2 (the second with split and a padded depthwise conv
    on the shuffled map) -> narrow + slice -> conv -> global pool -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                                nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x1, x2 = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat((x1, self.b1(x2)), dim=1), 2)
        x1, x2 = torch.split(x, [4, 4], dim=1)
        x = channel_shuffle(torch.cat((x1, self.b2(x2)), dim=1), 2)
        x = F.relu(self.bn(self.dw(x)))
        x = torch.cat((x.narrow(1, 0, 3), x[:, 5:8]), 1)
        x = F.relu(self.head(x))
        return self.fc(x.mean([2, 3]))


class Permute(nn.Module):
    """A channel permutation by permute/reshape directly on an activation, into a Linear after flatten."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        n, c, h, w = x.shape
        x = x.reshape(n, 3, 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        return self.fc(torch.flatten(x, 1))


class NotAPermutation(nn.Module):
    """A reshape that moves pixels across channels (space-to-depth): no channel gather."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(256, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        b, c, h, w = x.size()
        x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)
        return self.fc(torch.flatten(F.relu(x), 1))



def test_chunk_cat_and_channel_shuffle_convert():
    net, _ = deploy_random(Shuffle(), (3, 8, 8))
    assert not [n.name for n in net.nodes if n.neuron.graded]  # every split / shuffle folded into synapses


def test_channel_permutation_by_permute_converts():
    deploy_random(Permute(), (3, 4, 4))


@pytest.mark.lava
def test_channel_shuffle_is_bit_exact_on_lava():
    deploy_random(Shuffle(), (3, 8, 8), lava=True)


def test_a_reshape_that_is_no_channel_permutation_is_refused_in_one_line():
    q = random_qat(NotAPermutation(), (3, 8, 8))
    with pytest.raises(ConversionError, match=r"^fx node 'reshape'.* not a channel split, channel permutation"
                                              ) as e:
        to_floatnet(q, (3, 8, 8), 1.0 / 255)
    assert "\n" not in str(e.value)


def test_torchvision_shufflenet_v2_converts_fits_and_simulates():
    """torchvision shufflenet_v2_x0_5 at 32x32, 10 classes, random weights: the channel split and shuffle of
    every block become exact synapses; the stem's max-pool (an average pool) reaches the first block's padded
    depthwise conv through a graded node."""
    from na_deploy.hw_targets import get_target
    from na_deploy.training.model_spec import build_external

    torch.manual_seed(0)
    q = quantize_model(build_external("torchvision:shufflenet_v2_x0_5", 3, 10, 32).eval(), 2, True).eval()
    calibrate_step_sizes(q, torch.rand(4, 3, 32, 32))
    net = to_floatnet(q, (3, 32, 32), 1.0 / 255)
    assert [n.name for n in net.nodes if n.neuron.graded] == ["stage2.0.branch1.0.graded"]
    target = get_target("loihi2")
    fixed = target.to_fixed_point(net, 8)
    assert not target.check_fit(fixed, 8)
    x = torch.randint(0, 256, (1, 3, 32, 32), generator=torch.Generator().manual_seed(1)).numpy()
    assert target.reference_simulate(fixed, x, 8).readout.shape == (1, 10)
