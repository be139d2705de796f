"""BN recalibration as OFA's `set_running_statistics` does it (ofa.evaluation.recalibrate_bn):
per batch the mean and the *biased* variance of each BN's input, averaged over batches weighted
by batch size; static networks and elastic supernets with an active sub-network alike."""

from __future__ import annotations

import torch
from torch import nn

from ofa.evaluation import recalibrate_bn
from ofa.networks import OFAMobileNetV3
from ofa.space import SPACES
from tests.conftest import images, randomize_

EPS = 1e-5


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    conv1, conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 1)
    net = nn.Sequential(conv1, nn.BatchNorm2d(4), nn.ReLU(), conv2, nn.BatchNorm2d(5))
    with torch.no_grad():
        for bn in (net[1], net[4]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
            bn.running_mean.normal_()  # whatever training left: recalibration replaces it
            bn.running_var.uniform_(0.5, 2.0)
    return net


def reference_statistics(net: nn.Sequential, batches: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference's formula, written out: each BN normalises a batch with that batch's mean and
    biased variance; the statistics kept are the size-weighted averages over batches."""
    conv1, bn1, _, conv2, bn2 = net
    sums = [[0, 0.0, 0.0], [0, 0.0, 0.0]]
    for x in batches:
        h = conv1(x)
        for i, bn in enumerate((bn1, bn2)):
            mean = h.mean(dim=(0, 2, 3))
            var = ((h - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
            sums[i][0] += len(x)
            sums[i][1] = sums[i][1] + mean * len(x)
            sums[i][2] = sums[i][2] + var * len(x)
            h = (h - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + EPS)
            h = h * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
            if i == 0:
                h = conv2(torch.relu(h))
    return [(s[1] / s[0], s[2] / s[0]) for s in sums]


@torch.no_grad()
def test_statistics_follow_the_reference_formula():
    net = small_net()
    x = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # batches of 4, 4, 2
    tracked = [bn.num_batches_tracked.clone() for bn in (net[1], net[4])]
    recalibrate_bn(net, x, resolution=8, batch_size=4)
    assert not net.training and all(not m.training for m in net.modules())
    expected = reference_statistics(net, list(x.split(4)))
    for bn, (mean, var), before in zip((net[1], net[4]), expected, tracked):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1 and torch.equal(bn.num_batches_tracked, before)
    # PyTorch's own cumulative average (unbiased variance, every batch alike) is measurably other.
    torch_way = small_net()
    for bn in (torch_way[1], torch_way[4]):
        bn.reset_running_stats()
        bn.momentum = None
    torch_way.train()
    for batch in x.split(4):
        torch_way(batch)
    assert not torch.allclose(torch_way[4].running_var, net[4].running_var, rtol=1e-3)


@torch.no_grad()
def test_one_batch_sets_the_batch_statistics():
    """With one batch the stored variance is the biased one: eval mode then reproduces what
    training mode computes on that batch."""
    net = small_net(seed=3)
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    train_out = net.train()(x)
    recalibrate_bn(net, x, resolution=8)
    torch.testing.assert_close(net(x), train_out, rtol=1e-4, atol=1e-5)


def mnist_supernet() -> OFAMobileNetV3:
    torch.manual_seed(0)
    return randomize_(OFAMobileNetV3(space=SPACES["mnist"]), seed=0).eval()


@torch.no_grad()
def test_the_supernet_with_an_active_subnet_and_its_extraction_agree():
    """Elastic BN layers set only the channels they run, BN layers of skipped blocks keep theirs,
    and the result is what recalibrating the extracted static network gives."""
    supernet = mnist_supernet()
    space = supernet.space
    arch = space.sample(torch.Generator().manual_seed(5), r=24)
    arch = space.parse({**arch.to_dict(), "d": [2] * space.n_stages, "e": [min(space.expand_ratios)] * space.n_slots})
    calib = images(12, space.in_channels, arch.r, torch.Generator().manual_seed(6))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    static = recalibrate_bn(supernet.extract_subnet(arch), calib, arch.r, batch_size=5)
    supernet.set_active_subnet(arch)
    recalibrate_bn(supernet, calib, arch.r, batch_size=5)
    after = supernet.state_dict()
    skipped = [s for s in range(space.n_slots) if s not in arch.active_slots()]
    in_skipped = [k for k in after if k.startswith(f"blocks.{skipped[0]}.")]
    assert in_skipped and all(torch.equal(after[k], before[k]) for k in in_skipped)
    slot = arch.active_slots()[0]
    mid, var = supernet.blocks[slot].active_middle_channels, after[f"blocks.{slot}.expand_bn.running_var"]
    var_before = before[f"blocks.{slot}.expand_bn.running_var"]
    assert mid < len(var)
    assert torch.equal(var[mid:], var_before[mid:]) and not torch.equal(var[:mid], var_before[:mid])
    x = images(3, space.in_channels, arch.r, torch.Generator().manual_seed(7))
    torch.testing.assert_close(supernet(x), static(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(supernet.extract_subnet(arch).eval()(x), static(x), rtol=1e-5, atol=1e-6)
