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


@pytest.mark.parametrize(("size", "kernel", "stride"), [(7, 5, 1), (8, 7, 2), (9, 5, 2), (4, 7, 1), (6, 3, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_has_the_values_and_gradients_of_conv2d(size, kernel, stride, channels_last):
    """The CPU path computes the weight gradient as a grouped convolution of its own: checked
    against autograd's numerical gradient and against F.conv2d's analytic one."""
    from ofa.kernels.depthwise import depthwise_conv2d

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(size * 10 + kernel)
    x = torch.randn(2, 3, size, size, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(3, 1, kernel, kernel, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv2d(a, b, stride), (x, w))
    ours = depthwise_conv2d(x, w, stride)
    reference = F.conv2d(x, w, None, stride, kernel // 2, 1, 3)
    torch.testing.assert_close(ours, reference)
    upstream = torch.randn(ours.shape, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(ours, (x, w), upstream), torch.autograd.grad(reference, (x, w), upstream)):
        torch.testing.assert_close(a, b)


def test_supernet_trains_the_same_in_both_memory_formats():
    """One SGD step in channels-last (the training default) and in NCHW gives the same weights."""
    from ofa.networks import OFAMobileNetV3

    torch.manual_seed(0)
    nets = [OFAMobileNetV3.from_preset("mnist", dropout=0.0).train() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    nets[1].to(memory_format=torch.channels_last)
    arch = nets[0].space.sample(torch.Generator().manual_seed(1), r=24)
    x, y = torch.randn(8, 1, 24, 24), torch.randint(0, 10, (8,))
    for net, fmt in zip(nets, (torch.contiguous_format, torch.channels_last)):
        net.set_active_subnet(arch)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        F.cross_entropy(net(x.contiguous(memory_format=fmt)), y).backward()
        opt.step()
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
