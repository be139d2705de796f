"""`ofa-import`: an OFA-MobileNetV3 supernet released by mit-han-lab/once-for-all (a `.pth` file)
as `<out>/supernet.safetensors`, the file every later command reads (conf/import.yaml). The work
is `ofa.importer.import_ofa_checkpoint`; this shell names the output and prints one line."""

from __future__ import annotations

import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from app.shell import hydra_command, make_console
from ofa.checkpoint import save_supernet
from ofa.importer import import_ofa_checkpoint

# What later commands find in the file's info: where it came from, and the data it was trained on
# (ImageNet-1k, for every released OFA supernet). No seed: the split seed then defaults to 0.
ORIGIN = "mit-han-lab/once-for-all"
DATA = "imagenet"


def run(cfg: DictConfig, out: str | Path, console: Console | None = None) -> Path:
    """Import `cfg.src` and write `<out>/supernet.safetensors` (`cfg.out` wins over `out`)."""
    console = console or make_console()
    start = time.perf_counter()
    supernet, info = import_ofa_checkpoint(str(cfg.src))
    out = Path(cfg.out) if cfg.get("out") else Path(out)
    path = save_supernet(out / "supernet.safetensors", supernet, {"imported": ORIGIN, **info, "data": DATA})
    console.print(
        f"imported {escape(info['source'])}: space {info['space']}, {info['tensors']} tensors, "
        f"{time.perf_counter() - start:.1f} s -> {escape(str(path))}",
        soft_wrap=True,  # one line, however long the path
    )
    return path


def _task(cfg: DictConfig) -> None:
    run(cfg, HydraConfig.get().runtime.output_dir, make_console())


main = hydra_command("import")(_task)

if __name__ == "__main__":
    main()
