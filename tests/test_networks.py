from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ofa.networks import MobileNetV3, OFAMobileNetV3, layer_costs
from ofa.space import SPACES
from tests.conftest import calibrate_bn_, images, make_supernet


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize(
    ("kwargs", "n_archs"),
    [
        ({"space": SPACES["mnist"]}, 24),
        ({"num_classes": 10}, 20),
        ({"space": SPACES["ofa_mbv3_mnist"]}, 4),
        ({"space": SPACES["ofa_mbv3_w12"].with_(num_classes=10)}, 4),
    ],
    ids=["mnist", "w10", "ofa_mnist", "w12"],
)
def test_extracted_subnet_equals_active_supernet(kwargs, n_archs):
    supernet = make_supernet(**kwargs).eval()
    space = supernet.space
    g = torch.Generator().manual_seed(1)
    archs = [space.smallest(), space.largest()] + [supernet.space.sample(g) for _ in range(n_archs)]
    resolutions = {a.r for a in archs}
    assert len(resolutions) >= 3  # several resolutions covered
    for arch in archs:
        supernet.set_active_subnet(arch)
        calibrate_bn_(supernet, g)
        static = supernet.extract_subnet().eval()
        x = images(2, space.in_channels, arch.r, g)
        with torch.no_grad():
            expected, got = supernet(x), static(x)
        assert got.shape == (2, space.num_classes)
        assert max_diff(expected[0], expected[1]) > 1e-2  # the output depends on the input
        assert max_diff(expected, got) <= 1e-5, arch


def test_extracted_subnet_matches_in_training_mode_too():
    supernet = make_supernet(num_classes=10, dropout=0.0).train()
    arch = supernet.space.sample(torch.Generator().manual_seed(5))
    supernet.set_active_subnet(arch)
    static = supernet.extract_subnet().train()
    x = torch.randn(4, 3, arch.r, arch.r)
    assert max_diff(supernet(x), static(x)) <= 1e-4
    # Gradients of the shared weights agree with the static copy's.
    supernet.zero_grad()
    supernet(x).square().mean().backward()
    static(x).square().mean().backward()
    torch.testing.assert_close(
        supernet.classifier.linear.weight.grad, static.classifier.linear.weight.grad, rtol=1e-4, atol=1e-6
    )


def test_extract_leaves_the_supernet_untouched_and_copies_weights():
    supernet = make_supernet(num_classes=10)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    static = supernet.extract_subnet(supernet.space.smallest())
    with torch.no_grad():
        for p in static.parameters():
            p.add_(1.0)
    for k, v in supernet.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_channel_reorganisation_changes_no_output():
    supernet = make_supernet(num_classes=10).eval()
    arch = supernet.set_max_subnet()
    x = images(2, 3, 160, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = supernet(x)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    for stage in (0, 1, 2):
        supernet.reorganize_channels(expand_stage=stage)
        with torch.no_grad():
            assert max_diff(supernet(x), expected) <= 1e-5
            assert max_diff(supernet.extract_subnet(arch).eval()(x), expected) <= 1e-5
    changed = [k for k, v in supernet.state_dict().items() if not torch.equal(v, before[k])]
    assert any("project_conv" in k for k in changed) and any("se.reduce" in k for k in changed)


def test_reorganisation_puts_important_channels_first():
    supernet = make_supernet(num_classes=10)
    supernet.reorganize_channels()
    for block in supernet.blocks:
        importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])


def test_staged_reorganisation_keeps_channels_inside_their_width_group():
    supernet = make_supernet(num_classes=10)
    block = supernet.blocks[4]  # 24 -> 40, middle widths 72 / 96 / 144
    narrow = block.project_conv.weight[:, :96].abs().sum(dim=(0, 2, 3))
    block.reorganize_channels(expand_stage=1)
    after = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
    torch.testing.assert_close(after[:96].sort().values, narrow.sort().values)


@pytest.mark.parametrize(
    ("arch_name", "params", "macs_m"),
    [("largest", 7_664_760, 566.2), ("smallest", 3_410_792, 121.3)],
)
def test_counts_match_the_reference_implementation(arch_name, params, macs_m):
    supernet = OFAMobileNetV3(width_mult=1.0, num_classes=1000)
    arch = getattr(supernet.space, arch_name)(r=224)
    assert supernet.count_params(arch) == params
    assert round(supernet.count_macs(arch) / 1e6, 1) == macs_m
    assert sum(p.numel() for p in supernet.extract_subnet(arch).parameters()) == params


def test_count_params_equals_the_extracted_module_for_random_archs():
    for space in (SPACES["ofa_mbv3_w12"], SPACES["ofa_mbv3_mnist"]):
        supernet = OFAMobileNetV3(space=space)
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            arch = space.sample(g)
            assert supernet.count_params(arch) == sum(p.numel() for p in supernet.extract_subnet(arch).parameters())


def test_count_macs_agrees_with_a_forward_hook_count():
    supernet = OFAMobileNetV3(num_classes=10)
    arch = supernet.space.sample(torch.Generator().manual_seed(2))
    static = supernet.extract_subnet(arch)
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs.append(module.weight.numel() * output.shape[2] * output.shape[3])
        else:
            macs.append(module.weight.numel())

    for m in static.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            m.register_forward_hook(hook)
    static.eval()(torch.zeros(1, 3, arch.r, arch.r))
    assert sum(macs) == supernet.count_macs(arch)


def test_static_network_does_not_depend_on_the_elastic_code():
    supernet = OFAMobileNetV3(num_classes=10)
    static = supernet.extract_subnet(supernet.space.largest())
    assert isinstance(static, MobileNetV3)
    assert all(not type(m).__module__.startswith("ofa.elastic") for m in static.modules())
    code = (
        "import sys; import ofa.networks.mobilenet_v3; "
        "print(sorted(m for m in sys.modules if m.startswith('ofa.elastic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_static_network_rebuilds_from_arch_and_state_dict():
    supernet = make_supernet(num_classes=10).eval()
    arch = supernet.space.sample(torch.Generator().manual_seed(4))
    static = supernet.extract_subnet(arch).eval()
    rebuilt = MobileNetV3(supernet.space, arch)
    rebuilt.load_state_dict(static.state_dict())
    x = torch.randn(1, 3, arch.r, arch.r)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), static(x))


def test_sample_active_subnet_is_seeded_and_sets_the_subnet():
    supernet = OFAMobileNetV3(num_classes=10)
    a = supernet.sample_active_subnet(torch.Generator().manual_seed(9))
    assert supernet.active_arch == a and supernet.active_depths == list(a.d)
    assert a == supernet.space.sample(torch.Generator().manual_seed(9))
    for slot in a.active_slots():
        assert supernet.blocks[slot].active_kernel_size == a.ks[slot]
        assert supernet.blocks[slot].active_expand_ratio == a.e[slot]


def test_set_active_subnet_refuses_archs_of_another_space():
    supernet = OFAMobileNetV3(space=SPACES["ofa_mbv3_mnist"])
    with pytest.raises(ValueError, match="r = 224 is not allowed; allowed: 20, 24, 28"):
        supernet.set_active_subnet(SPACES["ofa_mbv3_w10"].largest())
    with pytest.raises(ValueError, match="pass either space= or space fields"):
        OFAMobileNetV3(space=SPACES["ofa_mbv3_mnist"], stem_stride=1)


def test_from_preset_with_overrides():
    supernet = OFAMobileNetV3.from_preset("ofa_mbv3_mnist", width_mult=1.2, resolutions=[24, 28])
    assert supernet.space.width_mult == 1.2 and supernet.space.resolutions == (24, 28)
    assert supernet(torch.zeros(1, 1, 24, 24)).shape == (1, 10)


def test_layer_shapes_identify_layers_independently_of_position():
    space = SPACES["ofa_mbv3_w10"]
    g = torch.Generator().manual_seed(0)
    by_shape: dict[str, tuple[int, int]] = {}
    for _ in range(30):
        for cost in layer_costs(space, space.sample(g)):
            # One shape, one cost: a lookup table keyed on shapes is well defined.
            assert by_shape.setdefault(cost.shape, (cost.params, cost.macs)) == (cost.params, cost.macs)
    a = space.uniform(5, 4, 3, 160)
    b = space.uniform(5, 4, 2, 160)
    assert [c.shape for c in layer_costs(space, a)][:3] == [c.shape for c in layer_costs(space, b)][:3]


def test_zero_init_residual_starts_every_residual_block_as_the_identity():
    torch.manual_seed(0)
    net = OFAMobileNetV3.from_preset("mnist", zero_init_residual=True).eval()
    plain = OFAMobileNetV3.from_preset("mnist").eval()
    residual = [b for b in (net.first_block, *net.blocks) if b.use_residual]
    assert net.first_block in residual
    assert residual and all(b.project_bn.weight.abs().sum() == 0 for b in residual)
    for block in residual:
        x = torch.randn(2, block.project_bn.num_features, 6, 6)
        assert torch.equal(block(x), x)
    # blocks without a shortcut and the plain network keep OFA's BN scale 1
    assert all(b.project_bn.weight.min() == 1 for b in net.blocks if not b.use_residual)
    assert all(b.project_bn.weight.min() == 1 for b in plain.blocks)
