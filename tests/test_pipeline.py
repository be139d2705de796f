from __future__ import annotations

import csv
import subprocess
import sys

from hydra import compose, initialize_config_dir

from ofa.cli import CONF_DIR
from ofa.space import ArchConfig, get_space
from search.pipeline import run_pipeline

FAST = ["inspect.rounds=2", "inspect.calls_per_round=2", "inspect.warmup_calls=1", "inspect.n_random=2"]


def compose_pipeline(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("pipeline", overrides=overrides)


def test_pipeline_reports_every_subnet(tmp_path):
    reports = run_pipeline(compose_pipeline(FAST), tmp_path)
    assert [r.name for r in reports] == ["smallest", "largest", "random0", "random1"]
    with open(tmp_path / "subnets.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    space = get_space("mnist")
    assert len(rows) == 4
    for row, rep in zip(rows, reports):
        assert ArchConfig.from_csv_fields(row, space) == rep.arch
        assert int(row["params"]) == rep.params and int(row["macs"]) == rep.macs
        assert float(row["latency_p10_ms"]) <= float(row["latency_ms"]) <= float(row["latency_p90_ms"])
    smallest, largest = reports[0], reports[1]
    assert smallest.macs < largest.macs and smallest.params < largest.params


def test_pipeline_runs_other_supernets(tmp_path):
    cfg = compose_pipeline([*FAST, "supernet=cifar", "+supernet.width_mult=1.2"])
    reports = run_pipeline(cfg, tmp_path)
    assert reports[1].arch.r == 32 and reports[1].params > reports[0].params


def test_cli_reports_bad_input_in_one_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "search.pipeline",
        *FAST,
        f"hydra.run.dir={tmp_path}",
        "+supernet.stage_strides=[3,2,2,1,2]",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: ValueError: stage_strides[0] = 3 is not allowed; allowed: 1, 2"]
    assert "Traceback" not in out.stdout + out.stderr
