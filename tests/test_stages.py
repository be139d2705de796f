"""Cached pipeline stages (app/stages.py): a stage is skipped only while its config, the stages
it reads and the source of its code are unchanged."""

from __future__ import annotations

import importlib
from pathlib import Path

from app.shell import make_console
from app.stages import Stage, StageRunner, _source_digest


def write_package(root: Path, name: str, body: str) -> None:
    (root / name).mkdir(exist_ok=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "core.py").write_text(body)
    importlib.invalidate_caches()


def test_a_stage_reruns_when_its_code_changes_and_so_do_the_stages_that_read_it(tmp_path, monkeypatch):
    code_root = tmp_path / "src"
    code_root.mkdir()
    monkeypatch.syspath_prepend(str(code_root))
    write_package(code_root, "stagecode_a", "SCALE = 1\n")
    write_package(code_root, "stagecode_b", "OFFSET = 0\n")
    runs: list[str] = []

    def stages() -> list[Stage]:
        def work(name: str):
            def run(folder: Path) -> dict:
                runs.append(name)
                return {"name": name}

            return run

        return [
            Stage("first", {"k": 1}, work("first"), code=("stagecode_a",)),
            Stage("second", {"k": 2}, work("second"), needs=("first",), code=("stagecode_b",)),
            Stage("other", {"k": 3}, work("other"), code=("stagecode_b",)),
        ]

    def run_all() -> None:
        _source_digest.cache_clear()  # a new process in real use
        runner = StageRunner(tmp_path / "run", make_console())
        for stage in stages():
            runner.run(stage)

    run_all()
    assert runs == ["first", "second", "other"]
    run_all()  # nothing changed: all current
    assert runs == ["first", "second", "other"]
    write_package(code_root, "stagecode_a", "SCALE = 2\n")  # an upgrade of the first stage's code
    run_all()
    assert runs[3:] == ["first", "second"]  # the stage and the one reading it; "other" stays current
    (code_root / "stagecode_b" / "extra.py").write_text("X = 1\n")  # a new file counts too
    run_all()
    assert runs[5:] == ["second", "other"]
