"""SIGKILL at a seeded point, rerun, compare with an uninterrupted run (issue 19).

ofa-train and ofa-profile have their own kill tests (tests/test_training.py, test_profiling.py),
ofa-search-bench its own (tests/test_search_resume.py); ofa-search's measurement loop is killed
in tests/test_pipeline.py, which has the fitted predictors it needs. Here: ofa-eval-subnets, and
the whole ofa-pipeline (slow).
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.config import compose
from app.train import train


def data_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` holds; fails when it ended first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def smoke_supernet(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke")
    train(compose("train", ["experiment=smoke", "logger=none", "threads=1"]), run_dir)
    return run_dir / "supernet.safetensors"


def test_killed_eval_subnets_resumes_to_the_uninterrupted_table(smoke_supernet, tmp_path):
    def cmd(output: Path) -> list[str]:
        return [sys.executable, "-m", "app.eval_subnets", f"checkpoint={smoke_supernet}", "n_subnets=10",
                "bn_calibration_images=64", f"output={output}", f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip

    whole, killed = tmp_path / "whole.csv", tmp_path / "killed.csv"
    run_ok(cmd(whole))
    kill_when(cmd(killed), lambda: len(data_rows(killed)) >= 3)
    at_kill = data_rows(killed)
    assert 3 <= len(at_kill) < 10
    run_ok(cmd(killed))
    resumed = data_rows(killed)
    assert resumed[: len(at_kill)] == at_kill  # rows written before are unchanged
    assert resumed == data_rows(whole)  # no row lost, none repeated, the same figures


@pytest.mark.slow
def test_killed_pipeline_resumes_to_the_uninterrupted_run(tmp_path):
    from tests.test_pipeline import SMALL

    def cmd(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "app.pipeline", *SMALL, f"run_dir={run_dir}"]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_ok(cmd(whole))
    kill_when(cmd(killed), lambda: len(data_rows(killed / "profile" / "measurements.csv")) >= 4, timeout=600)
    trained = (killed / "train" / "supernet.safetensors").read_bytes()
    evaluated = data_rows(killed / "eval" / "accuracy.csv")
    out = run_ok(cmd(killed))
    assert "skipped (current)" in out.stdout  # the train stage (done before the kill) is not rerun
    assert (killed / "train" / "supernet.safetensors").read_bytes() == trained
    assert data_rows(killed / "eval" / "accuracy.csv") == evaluated  # finished stages are not redone
    # Latency is measured again, so compare which sub-networks were measured: each exactly once.
    tables = [data_rows(d / "profile" / "measurements.csv") for d in (whole, killed)]
    archs = [[(r["ks"], r["e"], r["d"], r["r"]) for r in rows] for rows in tables]
    assert len(set(archs[1])) == len(archs[1]) and sorted(archs[0]) == sorted(archs[1])
    assert data_rows(killed / "eval/accuracy.csv") == data_rows(whole / "eval/accuracy.csv")
    assert (killed / "search" / "report.json").is_file()
