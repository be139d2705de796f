"""`ofa-import`: an OFA-MobileNetV3 supernet released by mit-han-lab/once-for-all (a `.pth` file)
as `<out>/supernet.safetensors`, the file every later command reads (conf/import.yaml). The work
is `ofa.importer.import_ofa_checkpoint`; this shell names the output and prints one line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from app.shell import hydra_command, make_console
from ofa.checkpoint import save_supernet
from ofa.importer import import_ofa_checkpoint
from ofa.space import SPACES, MBV3Space

# What later commands find in the file's info: where it came from, and the data it was trained on
# (ImageNet-1k, for every released OFA supernet). No seed: the split seed then defaults to 0.
ORIGIN = "mit-han-lab/once-for-all"
DATA = "imagenet"


def run(cfg: DictConfig, out: str | Path, console: Console | None = None) -> Path:
    """Import `cfg.src` and write `<out>/supernet.safetensors` (`cfg.out` wins over `out`)."""
    console = console or make_console()
    start = time.perf_counter()
    out = Path(cfg.out) if cfg.get("out") else Path(out)
    path, info = import_to(cfg.src, out / "supernet.safetensors")
    console.print(
        f"imported {escape(info['source'])}: space {info['space']}, {info['tensors']} tensors, "
        f"{time.perf_counter() - start:.1f} s -> {escape(str(path))}",
        soft_wrap=True,  # one line, however long the path
    )
    return path


def import_to(src: str | Path, path: str | Path, space: MBV3Space | None = None) -> tuple[Path, dict[str, Any]]:
    """Import the released `.pth` file `src` as the supernet file `path`; (path, its info).
    With `space`, a file of another space is refused before anything is written."""
    supernet, info = import_ofa_checkpoint(str(src))
    if space is not None:
        check_same_space(supernet.space, space, Path(src).name)
    return save_supernet(path, supernet, {"imported": ORIGIN, **info, "data": DATA}), info


def check_same_space(found: MBV3Space, expected: MBV3Space, source: str) -> None:
    """One line when the supernet in `source` is not of the configured space, naming the
    `supernet=` override that matches it."""
    if found.fingerprint() == expected.fingerprint():
        return
    raise ValueError(
        f"{source} holds a supernet of space {found.name} ({found.fingerprint()}) but supernet= configures "
        f"{expected.name} ({expected.fingerprint()}); set {supernet_override(found)}"
    )


def supernet_override(space: MBV3Space) -> str:
    """The command-line override that configures `space` (a preset, perhaps with its classes)."""
    for name, preset in SPACES.items():
        if preset.fingerprint() == space.fingerprint():
            return f"supernet={name}"
        if preset.with_(num_classes=space.num_classes).fingerprint() == space.fingerprint():
            return f"supernet={name} +supernet.num_classes={space.num_classes}"
    return "a supernet= config of that space (conf/supernet/)"


def _task(cfg: DictConfig) -> None:
    run(cfg, HydraConfig.get().runtime.output_dir, make_console())


main = hydra_command("import")(_task)

if __name__ == "__main__":
    main()
