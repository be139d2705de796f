"""C kernels for CPU training steps, compiled on first use and cached per machine.

The sources ship with the package (`ofa/kernels/csrc/*.c`). On first use they are compiled
with the system C compiler (`$CC`, else `cc`) for this CPU (`-march=native`) and OpenMP,
linked against the OpenMP runtime torch itself loaded, so both share one thread pool. The
library lands in `$OFA_KERNEL_CACHE` (default `~/.cache/ofa-hwnas/kernels`; where that
cannot be written, a private folder in the temporary directory) under a name
that hashes the sources, the compiler's version and the CPU's flags, written atomically so
that parallel processes (DDP ranks) may race. Each use stamps the library's access time; when a
new one is built, libraries unused for `STALE_DAYS` (older sources or compilers; a machine that
shares the cache but no longer runs) and temporary files left by a killed compile are removed,
so the cache does not grow with every change of the sources. Without a compiler, or with
`OFA_COMPILED_KERNELS=0`, `library()` returns None and callers keep their torch path; the
reason is logged once.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCES = sorted((Path(__file__).with_name("csrc")).glob("*.c"))
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
STALE_DAYS = 30
_INT, _LONG, _FLOAT, _PTR = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p


@cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (logged once) where they cannot be built or are switched off."""
    if os.environ.get("OFA_COMPILED_KERNELS", "1") == "0":
        log.info("compiled CPU kernels off (OFA_COMPILED_KERNELS=0); torch's kernels are used")
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("compiled CPU kernels unavailable (%s); torch's kernels are used", err)
        return None
    lib.depthwise_weight_grad.argtypes = [_PTR] * 3 + [_INT] * 9
    lib.batch_norm_act_forward.argtypes = [_PTR] * 8 + [_LONG, _INT, _FLOAT, _FLOAT, _INT, _INT]
    lib.batch_norm_act_backward.argtypes = [_PTR] * 9 + [_LONG, _INT, _INT, _INT]
    for fn in (lib.depthwise_weight_grad, lib.batch_norm_act_forward, lib.batch_norm_act_backward):
        fn.restype = _INT
    return lib


def _build() -> Path:
    compiler = os.environ.get("CC", "cc")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    link = _openmp_link_flags()
    texts = [f"{src.name}\0{src.read_text()}" for src in SOURCES]
    key = hashlib.sha256("\0".join([*texts, version, *FLAGS, *link, _cpu_flags()]).encode()).hexdigest()
    name = f"ofa-kernels-{key[:16]}.so"
    folders = _cache_dirs()
    for folder in folders:
        if (folder / name).exists() and (folder is folders[0] or _ours_alone(folder)):
            _stamp_use(folder / name)
            return folder / name
    for folder in folders:  # the first we can write to: a read-only home falls back
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if folder is not folders[0] and not _ours_alone(folder):
                raise PermissionError("others can write to it")
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".so.tmp")
        except OSError as err:
            log.info("kernel cache %s not usable (%s)", folder, err)
            continue
        os.close(fd)
        built = _compile(compiler, link, tmp, folder / name)
        _prune(folder, keep=built.name)
        return built
    raise OSError(f"no writable kernel cache ({', '.join(map(str, folders))})")


def _compile(compiler: str, link: list[str], tmp: str, target: Path) -> Path:
    """Compile the sources into `tmp`, then move it onto `target` (atomically)."""
    command = [compiler, *FLAGS, *map(str, SOURCES), "-o", tmp, *link, "-lm"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode:
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            raise OSError(f"{compiler} failed: {last}")
        os.replace(tmp, target)  # atomic: a racing process sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _stamp_use(path: Path) -> None:
    """Record a use in the access time (the modification time stays the build's)."""
    with contextlib.suppress(OSError):  # a read-only cache still works; it is only never pruned
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))


def _prune(folder: Path, keep: str) -> None:
    """Remove libraries unused for `STALE_DAYS` and temporary files a day old (a killed compile)."""
    now = time.time()
    removed = 0
    for path in [*folder.glob("ofa-kernels-*.so"), *folder.glob("*.so.tmp")]:
        try:
            info = path.stat()
            age_days = (now - max(info.st_atime, info.st_mtime)) / 86400
            if path.name != keep and age_days > (1 if path.name.endswith(".tmp") else STALE_DAYS):
                path.unlink()
                removed += 1
        except OSError:
            continue  # another process removed or holds it
    if removed:
        log.info("kernel cache %s: removed %d stale file(s)", folder, removed)


def _openmp_link_flags() -> list[str]:
    """Link torch's own OpenMP runtime where its wheel bundles one (one thread pool, not two)."""
    torch_lib = Path(torch.__file__).parent / "lib"
    if (torch_lib / "libgomp.so.1").exists():
        return [f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-l:libgomp.so.1"]
    return []


def _cpu_flags() -> str:
    """What `-march=native` depends on: a cache shared between machines must not mix them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _cache_dirs() -> list[Path]:
    """Where the library may live: `$OFA_KERNEL_CACHE` (else the user's cache folder), then,
    where users have ids (POSIX), a folder of this user's in the temporary directory."""
    if "OFA_KERNEL_CACHE" in os.environ:
        cache = Path(os.environ["OFA_KERNEL_CACHE"])
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ofa-hwnas" / "kernels"
    if not hasattr(os, "getuid"):
        return [cache]
    return [cache, Path(tempfile.gettempdir()) / f"ofa-hwnas-kernels-{os.getuid()}"]


def _ours_alone(folder: Path) -> bool:
    """A folder in a shared temporary directory is used only if this user owns it and no one
    else can write to it: the library loaded from there runs as this user."""
    try:
        info = folder.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, k: int, stride: int) -> torch.Tensor | None:
    """d loss / d weight (C, 1, k, k) of a float32 depthwise convolution with padding k // 2,
    or None where the compiled kernel is not available."""
    lib = library()
    if lib is None:
        return None
    n, c, h, w = x.shape
    oh, ow = grad_out.shape[2:]
    # (N, C, H, W) in channels-last is (N, H, W, C) in memory, the layout the kernel reads.
    x = x.contiguous(memory_format=torch.channels_last)
    grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    grad = torch.empty(k, k, c)
    failed = lib.depthwise_weight_grad(
        x.data_ptr(), grad_out.data_ptr(), grad.data_ptr(), n, h, w, c, k, stride, oh, ow, torch.get_num_threads()
    )
    return None if failed else grad.permute(2, 0, 1).unsqueeze(1).contiguous()


def batch_norm_act_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running: tuple[torch.Tensor, torch.Tensor] | None,
    momentum: float,
    eps: float,
    act: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training-mode batch norm of a channels-last float32 `x` (more than one value per
    channel) followed by activation `act` (0 none, 1 relu, 2 hardswish): (output, batch mean,
    1 / batch std). `running` (mean, var) move in place. `weight`, `bias` and `running` are
    contiguous with at least C = x.shape[1] entries, of which the first C are used (a
    DynamicBatchNorm2d's active channels). The caller has checked that `library()` loads."""
    n, c, h, w = x.shape
    out = torch.empty_like(x, memory_format=torch.channels_last)
    mean, invstd = torch.empty(c), torch.empty(c)
    stats = (0, 0) if running is None else (running[0].data_ptr(), running[1].data_ptr())
    failed = library().batch_norm_act_forward(  # type: ignore[union-attr]
        x.data_ptr(), weight.data_ptr(), bias.data_ptr(), out.data_ptr(), mean.data_ptr(), invstd.data_ptr(),
        *stats, n * h * w, c, momentum, eps, act, torch.get_num_threads(),
    )  # fmt: skip
    if failed:
        raise MemoryError("batch_norm_act_forward could not allocate its buffers")
    return out, mean, invstd


def batch_norm_act_backward(
    grad_out: torch.Tensor,
    saved: tuple[torch.Tensor, ...],
    act: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (input, weight, bias) of `batch_norm_act_forward`, the latter two the size of
    `weight` (zero beyond x.shape[1]); `saved` is (x, weight, bias, mean, invstd) of the
    forward, which succeeded, so the library is loaded."""
    x, weight, bias, mean, invstd = saved
    n, c, h, w = x.shape
    grad_out = grad_out.contiguous(memory_format=torch.channels_last)
    grad_x = torch.empty_like(x, memory_format=torch.channels_last)
    grad_w, grad_b = torch.zeros(weight.shape[0]), torch.zeros(weight.shape[0])
    failed = library().batch_norm_act_backward(  # type: ignore[union-attr]
        grad_out.data_ptr(), x.data_ptr(), mean.data_ptr(), invstd.data_ptr(), weight.data_ptr(), bias.data_ptr(),
        grad_x.data_ptr(), grad_w.data_ptr(), grad_b.data_ptr(), n * h * w, c, act, torch.get_num_threads(),
    )  # fmt: skip
    if failed:
        raise MemoryError("batch_norm_act_backward could not allocate its buffers")
    return grad_x, grad_w, grad_b
