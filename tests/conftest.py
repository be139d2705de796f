from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from app.shell import register_resolvers
from ofa.networks import OFAMobileNetV3

register_resolvers()  # conf/ uses them; the commands register them before composing

# One torch thread in tests (and in the commands they start): with two threads, a second job
# on a 2-core machine makes torch's spinning workers run 5-10x slower; one thread is steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@torch.no_grad()
def calibrate_bn_(net: OFAMobileNetV3, generator: torch.Generator, batches: int = 2) -> OFAMobileNetV3:
    """Set BN statistics from batches of the *active* sub-network (statistics of another
    sub-network leave too little signal at the output), then switch to eval mode."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    net.train()
    r = net.active_arch.r
    for _ in range(batches):
        net(images(4, net.space.in_channels, r, generator))
    for m in bns:
        m.momentum = 0.1
    return net.eval()


@torch.no_grad()
def randomize_(net: OFAMobileNetV3, seed: int = 0) -> OFAMobileNetV3:
    """Give BN affine parameters and kernel-transform matrices non-trivial values and set BN
    statistics from the largest sub-network: equality tests then notice any slice or matrix
    applied wrongly."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    for name, p in net.named_parameters():
        if ".transforms." in name:
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    net.set_max_subnet()
    return calibrate_bn_(net, g)


def images(n: int, channels: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    """Random images with structure at several scales: i.i.d. pixel noise alone averages out
    in the global pool, so every input would give the same output."""
    coarse = torch.randn(n, channels, 4, 4, generator=generator) * 2
    x = torch.nn.functional.interpolate(coarse, size=(resolution, resolution), mode="bilinear")
    return x + torch.randn(n, channels, resolution, resolution, generator=generator) * 0.5


def make_supernet(seed: int = 0, **kwargs) -> OFAMobileNetV3:
    torch.manual_seed(seed)
    return randomize_(OFAMobileNetV3(**kwargs), seed)


def user_error_line(task, capsys) -> str:
    """The one line a command prints for the bad input `task()` raises, through the same
    reporting the Hydra entry points use (in process: no interpreter start per case)."""
    from app.shell import USER_ERRORS, report_user_error

    with pytest.raises(SystemExit) as info:
        try:
            task()
        except USER_ERRORS as exc:
            report_user_error(exc)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]
