"""Cached pipeline stages: a stage reruns only when what it depends on changed.

Each stage works in `<run_dir>/<stage>/` and records `stage.json` there: a digest of its own
config, of the source of the code it runs and of the digests of the stages it reads, whether it
completed, and a summary. A stage whose digest matches a completed record is skipped; one that
was interrupted runs again in its folder (the commands it wraps resume); one whose digest
changed starts afresh. The code is part of the digest so that an upgraded tool never reuses
what an older version computed in the same run folder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ofa.io import atomic_write_json

MARKER = "stage.json"


# The files of a package that make up its code: Python and the C sources of compiled kernels.
SOURCE_SUFFIXES = (".py", ".c", ".cpp", ".cu", ".h")


def digest_of(config: Any, upstream: Sequence[str] = (), code: str = "") -> str:
    text = json.dumps({"config": config, "upstream": list(upstream), "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_fingerprint(modules: Sequence[str]) -> str:
    """A digest of the source files of the named packages and modules."""
    return hashlib.sha256("".join(_source_digest(m) for m in modules).encode()).hexdigest()[:16]


@functools.cache
def _source_digest(name: str) -> str:
    """One package's or module's source files, found where Python imports them from (an
    installed or an editable copy alike); cached, as every stage names `ofa` or `app`."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise RuntimeError(f"stage code {name!r} is not importable")
    if spec.submodule_search_locations:  # a package: every source file under it
        files = sorted(
            (f.relative_to(root).as_posix(), f)
            for root in map(Path, spec.submodule_search_locations)
            for f in root.rglob("*")
            if f.suffix in SOURCE_SUFFIXES
        )
    else:
        origin = Path(str(spec.origin))
        files = [(origin.name, origin)]
    digest = hashlib.sha256()
    for relative, f in files:
        digest.update(f"{name}:{relative}\0".encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


@dataclass
class Stage:
    name: str
    config: Mapping[str, Any]  # everything the stage's result depends on, besides its inputs
    run: Callable[[Path], dict[str, Any]]  # does the work in the given folder, returns a summary
    needs: Sequence[str] = ()  # stages whose outputs it reads
    code: Sequence[str] = ()  # packages and modules whose source its result depends on


@dataclass
class StageRunner:
    run_dir: Path
    console: Console
    digests: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        return self.run_dir / name

    def run(self, stage: Stage) -> dict[str, Any]:
        missing = [n for n in stage.needs if n not in self.digests]
        if missing:
            raise RuntimeError(f"stage {stage.name} needs {', '.join(missing)} to run first")
        code = code_fingerprint(stage.code) if stage.code else ""
        digest = digest_of(stage.config, [self.digests[n] for n in stage.needs], code)
        folder = self.folder(stage.name)
        marker = folder / MARKER
        record = json.loads(marker.read_text()) if marker.is_file() else None
        if record and record.get("digest") == digest and record.get("complete"):
            self.console.print(f"[dim]stage {stage.name}: current ({digest}), skipped[/]")
            self.digests[stage.name] = digest
            self.timings[stage.name] = 0.0
            return record["summary"]
        if record and record.get("digest") != digest:
            self.console.print(
                f"stage {stage.name}: inputs changed (config, stages read or code), rerunning from scratch"
            )
            shutil.rmtree(folder)
        elif record:
            self.console.print(f"stage {stage.name}: resuming an interrupted run")
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"digest": digest, "complete": False, "config": stage.config})
        self.console.rule(f"stage {stage.name}")
        start = time.perf_counter()
        summary = stage.run(folder)
        seconds = time.perf_counter() - start
        atomic_write_json(
            marker,
            {"digest": digest, "complete": True, "config": stage.config, "seconds": round(seconds, 1),
             "summary": summary},
        )  # fmt: skip
        self.digests[stage.name] = digest
        self.timings[stage.name] = seconds
        return summary
