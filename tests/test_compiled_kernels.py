"""The compiled CPU training kernels (ofa/kernels) against torch's own layers, and the
fallback to torch's layers where the kernels cannot be built."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ofa.elastic import DynamicBatchNorm2d
from ofa.kernels import compiled
from ofa.kernels.batch_norm_act import batch_norm_act, fused_batch_norm
from ofa.kernels.depthwise import depthwise_conv2d, weight_grad_path
from ofa.threads import torch_threads

needs_kernels = pytest.mark.skipif(compiled.library() is None, reason="no C compiler: the kernels did not build")
CHANNELS_LAST = torch.channels_last


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int) -> tuple[torch.Tensor, ...]:
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, upstream)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("batch", "channels", "size", "kernel", "stride"),
    # 13 channels: a tail beyond the 8-wide vectors; 9x9: the kernel's generic (not unrolled) loop
    [(3, 16, 7, 5, 1), (2, 13, 8, 7, 2), (4, 24, 6, 7, 1), (2, 9, 9, 5, 2), (2, 8, 12, 9, 1), (5, 3, 3, 7, 1)],
)
def test_compiled_depthwise_weight_grad_matches_conv2d(batch, channels, size, kernel, stride, threads):
    g = torch.Generator().manual_seed(batch * 100 + channels)
    x = torch.randn(batch, channels, size, size, generator=g).contiguous(memory_format=CHANNELS_LAST)
    w = torch.randn(channels, 1, kernel, kernel, generator=g)
    x.requires_grad_(True)
    w.requires_grad_(True)
    reference = F.conv2d(x, w, None, stride, kernel // 2, 1, channels)
    with torch_threads(threads), weight_grad_path("compiled"):
        ours = depthwise_conv2d(x, w, stride)
        grads = _grads(ours, (x, w), 1)
        again = _grads(depthwise_conv2d(x, w, stride), (x, w), 1)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(grads, _grads(reference, (x, w), 1)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(grads, again):  # the same threads give the same bits
        assert torch.equal(a, b)


def _bn_pair(channels: int, max_channels: int, momentum: float | None) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d]:
    bn = DynamicBatchNorm2d(max_channels, momentum=momentum) if channels < max_channels else nn.BatchNorm2d(channels)
    bn.momentum = momentum
    g = torch.Generator().manual_seed(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.normal_(generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
    return bn, copy.deepcopy(bn)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("act", "channels", "max_channels", "momentum", "offset"),
    [
        (nn.Hardswish(inplace=True), 24, 24, 0.1, 0.0),
        (nn.ReLU(inplace=True), 13, 40, 0.1, 0.0),  # a DynamicBatchNorm2d slice
        (None, 16, 16, None, 0.0),  # cumulative average
        (nn.Hardswish(), 20, 32, 0.2, 50.0),  # a mean far from 0 against the spread
    ],
)
def test_batch_norm_act_matches_torch(act, channels, max_channels, momentum, offset, threads):
    ours_bn, torch_bn = _bn_pair(channels, max_channels, momentum)
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(6, channels, 5, 5, generator=g) * 2 + offset).contiguous(memory_format=CHANNELS_LAST)
    x.requires_grad_(True)
    with torch_threads(threads):
        for _ in range(2):  # twice: the running statistics move from where the first step left them
            ours = batch_norm_act(ours_bn, x, act)
            with fused_batch_norm(False):
                reference = batch_norm_act(torch_bn, x, act)
    assert ours.grad_fn is not None and type(ours.grad_fn).__name__ == "_BatchNormActBackward"
    assert reference.grad_fn is not None and "BatchNormAct" not in type(reference.grad_fn).__name__
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    ours_grads = _grads(ours, (x, ours_bn.weight, ours_bn.bias), 2)
    for a, b in zip(ours_grads, _grads(reference, (x, torch_bn.weight, torch_bn.bias), 2)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours_bn, name), getattr(torch_bn, name), msg=name)


def test_batch_norm_act_runs_torch_layers_outside_cpu_training():
    """Evaluation (and so export), float64, NCHW inputs and hooked BNs take the layers themselves."""
    bn, act = nn.BatchNorm2d(4), nn.ReLU()
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=CHANNELS_LAST)
    for case, inp in (("eval", x), ("float64", x.double()), ("nchw", x.contiguous()), ("hooked", x)):
        model = copy.deepcopy(bn).train(case != "eval").to(inp.dtype)
        if case == "hooked":
            model.register_forward_hook(lambda *_: None)
        out = batch_norm_act(model, inp.requires_grad_(True), act)
        assert "BatchNormAct" not in type(out.grad_fn).__name__, case
        torch.testing.assert_close(out, act(copy.deepcopy(model)(inp)), msg=case)


def test_without_a_compiler_training_falls_back_with_one_warning(monkeypatch, tmp_path, caplog):
    """A compiler that fails: `library()` is None, logged once, and the layers compute as torch does."""
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("OFA_KERNEL_CACHE", str(tmp_path))
    compiled.library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="ofa.kernels.compiled"):
            assert compiled.library() is None
            assert compiled.library() is None
        assert sum("compiled CPU kernels unavailable" in r.message for r in caplog.records) == 1
        x = torch.randn(2, 8, 6, 6).contiguous(memory_format=CHANNELS_LAST).requires_grad_(True)
        w = torch.randn(8, 1, 7, 7, requires_grad=True)
        out = batch_norm_act(nn.BatchNorm2d(8), depthwise_conv2d(x, w, 1), nn.Hardswish())
        grads = _grads(out, (x, w), 3)
        with weight_grad_path("native"), fused_batch_norm(False):
            reference = nn.Hardswish()(nn.BatchNorm2d(8)(F.conv2d(x, w, None, 1, 3, 1, 8)))
        torch.testing.assert_close(out, reference)
        for a, b in zip(grads, _grads(reference, (x, w), 3)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    finally:
        monkeypatch.undo()
        compiled.library.cache_clear()


@needs_kernels
def test_kernels_build_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("OFA_KERNEL_CACHE", str(tmp_path))
    compiled.library.cache_clear()
    try:
        assert compiled.library() is not None
        built = sorted(tmp_path.iterdir())
        assert len(built) == 1 and built[0].suffix == ".so"  # no temporary file left behind
        compiled.library.cache_clear()
        before = built[0].stat().st_mtime_ns
        assert compiled.library() is not None
        assert [p.stat().st_mtime_ns for p in tmp_path.iterdir()] == [before]  # reused, not rebuilt
    finally:
        monkeypatch.undo()
        compiled.library.cache_clear()


@needs_kernels
def test_a_new_build_prunes_what_has_gone_unused(monkeypatch, tmp_path):
    """Building a library removes libraries unused for STALE_DAYS and day-old temporary files;
    a library used lately (another machine's), other files and the reused library stay."""
    month = compiled.STALE_DAYS * 86400
    stale = tmp_path / "ofa-kernels-0000000000000000.so"
    recent = tmp_path / "ofa-kernels-1111111111111111.so"
    killed = tmp_path / "tmpabc.so.tmp"
    other = tmp_path / "notes.txt"
    for path, age in ((stale, month + 86400), (recent, month - 86400), (killed, 2 * 86400), (other, 10 * month)):
        path.write_text("")
        os.utime(path, (time.time() - age, time.time() - age))
    monkeypatch.setenv("OFA_KERNEL_CACHE", str(tmp_path))
    compiled.library.cache_clear()
    try:
        assert compiled.library() is not None
        left = {p.name for p in tmp_path.iterdir()}
        built = next(n for n in left if n.startswith("ofa-kernels-") and n not in (recent.name, stale.name))
        assert left == {built, recent.name, other.name}
        # Reused after a month unused: its access time is stamped (so a prune keeps it), its
        # build time kept.
        backdated = time.time_ns() - (month + 86400) * 10**9
        os.utime(tmp_path / built, ns=(backdated, backdated))
        compiled.library.cache_clear()
        assert compiled.library() is not None
        info = (tmp_path / built).stat()
        assert info.st_mtime_ns == backdated and info.st_atime_ns > backdated + month * 10**9
    finally:
        monkeypatch.undo()
        compiled.library.cache_clear()


@needs_kernels
def test_a_cache_that_cannot_be_written_falls_back_to_a_private_temp_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder below a file cannot be made, even by root
    monkeypatch.setenv("OFA_KERNEL_CACHE", str(blocker / "kernels"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    compiled.library.cache_clear()
    try:
        assert compiled.library() is not None
        private = tmp_path / "tmp" / f"ofa-hwnas-kernels-{os.getuid()}"
        assert [p.suffix for p in private.iterdir()] == [".so"]
        assert private.stat().st_mode & 0o777 == 0o700
        # A folder others can write to is not trusted: nothing is loaded from it or built into it.
        private.chmod(0o777)
        compiled.library.cache_clear()
        assert compiled.library() is None
    finally:
        monkeypatch.undo()
        compiled.library.cache_clear()


def _graph_names(out: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [out.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def test_static_block_trains_with_the_cheaper_depthwise_gradient():
    """An extracted (static) block's training step takes the depthwise path of the elastic one:
    the same values and gradients as its own nn.Conv2d."""
    from ofa.networks.mobilenet_v3 import MBConv

    torch.manual_seed(0)
    block = MBConv(16, 48, 16, 7, 1, "hswish", 8).train().to(memory_format=CHANNELS_LAST)
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=CHANNELS_LAST)
    ours = block(x)
    params = tuple(block.parameters())
    with weight_grad_path("native"), fused_batch_norm(False):
        reference = block(x)
    assert "_DepthwiseConvBackward" in _graph_names(ours)
    assert "_DepthwiseConvBackward" not in _graph_names(reference)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    for a, b in zip(_grads(ours, params, 4), _grads(reference, params, 4)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_batch_norm_act_keeps_torchs_answer_for_degenerate_batches():
    """One value per channel in training is refused as torch refuses it; an empty batch passes."""
    bn = nn.BatchNorm2d(4).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        batch_norm_act(bn, torch.randn(1, 4, 1, 1), nn.ReLU())
    empty = torch.randn(0, 4, 3, 3).contiguous(memory_format=CHANNELS_LAST)
    assert batch_norm_act(bn, empty, nn.ReLU()).shape == (0, 4, 3, 3)
