from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ofa.elastic import DynamicBatchNorm2d, DynamicDepthwiseConv2d, DynamicMBConv, DynamicPointwiseConv2d


def test_kernel_transform_follows_the_ofa_chain():
    torch.manual_seed(0)
    conv = DynamicDepthwiseConv2d(6, (3, 5, 7))
    with torch.no_grad():
        for p in conv.transforms.values():
            p.add_(torch.randn_like(p) * 0.3)
    w = conv.weight[:4]
    m75, m53 = conv.transforms["7to5"], conv.transforms["5to3"]
    # 5x5: centre of the 7x7, each channel's 25 values times the 25x25 matrix (x @ M^T).
    k5 = torch.einsum("cij,kij->ck", w[:, 0, 1:6, 1:6], m75.view(25, 5, 5)).view(4, 1, 5, 5)
    # 3x3: centre of the *transformed* 5x5, times the 9x9 matrix.
    k3 = torch.einsum("cij,kij->ck", k5[:, 0, 1:4, 1:4], m53.view(9, 3, 3)).view(4, 1, 3, 3)
    torch.testing.assert_close(conv.active_filter(4, 7), w)
    torch.testing.assert_close(conv.active_filter(4, 5), k5)
    torch.testing.assert_close(conv.active_filter(4, 3), k3)
    x = torch.randn(2, 4, 9, 9)
    conv.active_kernel_size = 3
    torch.testing.assert_close(conv(x), F.conv2d(x, k3, padding=1, groups=4))
    with pytest.raises(ValueError, match="kernel_size = 4 is not allowed"):
        conv.active_filter(4, 4)


def test_identity_transforms_give_the_centre_crop():
    conv = DynamicDepthwiseConv2d(3, (3, 5, 7))
    torch.testing.assert_close(conv.active_filter(3, 3), conv.weight[:, :, 2:5, 2:5])
    assert sum(p.numel() for p in conv.transforms.values()) == 25 * 25 + 9 * 9  # 706 per block


def test_pointwise_conv_slices_in_and_out_channels():
    conv = DynamicPointwiseConv2d(8, 6, bias=True)
    x = torch.randn(2, 5, 3, 3)
    expected = F.conv2d(x, conv.weight[:4, :5], conv.bias[:4])
    torch.testing.assert_close(conv(x, out_channels=4), expected)
    conv.active_out_channels = 4
    torch.testing.assert_close(conv(x), expected)


def test_dynamic_bn_updates_only_active_channels():
    bn = DynamicBatchNorm2d(16)
    reference = torch.nn.BatchNorm2d(8)
    x = torch.randn(4, 8, 5, 5) * 3 + 1
    bn.train()
    reference.train()
    torch.testing.assert_close(bn(x), reference(x))
    torch.testing.assert_close(bn.running_mean[:8], reference.running_mean)
    assert torch.all(bn.running_mean[8:] == 0) and torch.all(bn.running_var[8:] == 1)
    # Cumulative averaging (momentum None), as used when recalibrating BN statistics.
    bn.reset_running_stats()
    reference.reset_running_stats()
    bn.momentum = reference.momentum = None
    for _ in range(3):
        x = torch.randn(4, 8, 5, 5) * 2
        bn(x)
        reference(x)
    torch.testing.assert_close(bn.running_var[:8], reference.running_var)
    bn.eval()
    reference.eval()
    torch.testing.assert_close(bn(x), reference(x))


def test_block_validates_its_choices():
    block = DynamicMBConv(16, 24, (3, 5, 7), (3, 4, 6), 2, "relu", True)
    with pytest.raises(ValueError, match="expand_ratio = 5 is not allowed; allowed: \\[3, 4, 6\\]"):
        block.set_active(3, 5)
    block.set_active(5, 4)
    assert block.active_middle_channels == 64 and block.expand_conv.active_out_channels == 64
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 24, 4, 4)
