"""The main job (`ofa-pipeline`) end to end on the embedded data, and `ofa-search` on its outputs.

One short pipeline run (smoke schedule, a dozen sub-networks evaluated and profiled, 300 search
evaluations) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir

from app.pipeline import run_pipeline
from app.shell import CONF_DIR
from ofa.export import load_subnet
from tests.conftest import user_error_line

SMALL = [
    "experiment=smoke",
    "epochs_per_phase=1",  # the pipeline's own 8 would override the smoke experiment's 1
    "threads=1",
    "stages.eval.n_subnets=14",
    "stages.eval.bn_calibration_images=128",
    "stages.profile.n_subnets=14",
    "stages.profile.overrides.timing.rounds=3",
    "+stages.profile.overrides.noise.max_remeasure=0",  # retries are tested in test_profiling
    "+stages.profile.overrides.noise.group_retries=0",
    "stages.fit.latency_model=ridge",
    "stages.fit.accuracy_model=ridge",
    "stages.search.n_trials=300",
    "stages.search.population_size=50",
    "stages.search.bn_calibration_images=128",
]
STAGES = ["train", "eval", "profile", "fit", "search"]


def pipeline(run_dir: Path, overrides: list[str] = ()) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=[*SMALL, *overrides])
        return run_pipeline(cfg, run_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pipeline")
    pipeline(folder)
    return folder


def stage_seconds(run_dir: Path) -> dict[str, float]:
    return {s: json.loads((run_dir / s / "stage.json").read_text())["seconds"] for s in STAGES}


def test_every_stage_completes_and_the_report_answers_every_budget(run_dir):
    for stage in STAGES:
        assert json.loads((run_dir / stage / "stage.json").read_text())["complete"], stage
    report = json.loads((run_dir / "search" / "report.json").read_text())
    budgets = report["budgets"]
    assert len(budgets) == 3
    limits = [b["limits"]["latency_ms"] for b in budgets]
    assert limits == sorted(limits)
    for b in budgets:
        assert b["arch"], b["message"]
        assert b["predicted"]["latency_ms"] <= b["limits"]["latency_ms"]  # feasible by the predictor
        assert 0.0 <= b["measured"]["acc"] <= 1.0 and b["measured"]["latency_ms"] > 0
        assert b["macs"] > 0 and b["params"] > 0
    assert (run_dir / "search" / "pareto.png").stat().st_size > 10_000
    assert "| budget |" in (run_dir / "search" / "report.md").read_text()


def test_exported_onnx_matches_the_torch_subnetwork(run_dir):
    report = json.loads((run_dir / "search" / "report.json").read_text())
    folder = Path(report["budgets"][0]["export"])
    net = load_subnet(folder)
    x = torch.randn(1, 1, net.arch.r, net.arch.r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert net.arch.key() == report["budgets"][0]["arch"]


def test_rerun_skips_current_stages_and_a_changed_setting_reruns_only_its_stage(run_dir, tmp_path):
    copy = tmp_path / "pipeline"  # a copy: the shared run folder stays as the other tests read it
    shutil.copytree(run_dir, copy)
    pipeline(copy)
    first = stage_seconds(copy)
    pipeline(copy, ["stages.search.n_trials=200"])
    second = stage_seconds(copy)
    assert {s: second[s] == first[s] for s in STAGES[:-1]} == dict.fromkeys(STAGES[:-1], True)
    report = json.loads((copy / "search" / "report.json").read_text())
    assert report["evaluations"] == 200


def test_search_command_refuses_an_impossible_budget_in_one_line(run_dir, tmp_path):
    cmd = [
        sys.executable, "-m", "app.search", f"checkpoint={run_dir / 'train'}", "threads=1",
        f"predictors.acc={run_dir / 'fit' / 'acc'}", f"predictors.latency_ms={run_dir / 'fit' / 'latency_ms'}",
        "budgets.latency_ms=[0.001]", "n_trials=100", "population_size=20", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: NoFeasibleArch: budget 'latency_ms<=0.001'") and "closest:" in line
    assert "Traceback" not in out.stdout + out.stderr
    assert (tmp_path / "report.md").is_file()  # what was found is still written


def test_search_command_bad_input_is_one_line(run_dir, tmp_path):
    cmd = [sys.executable, "-m", "app.search", f"checkpoint={run_dir / 'train'}", "device=no-such-device",
           f"hydra.run.dir={tmp_path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "no-such-device" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+budgets.power_mw=[3]", "budgets.power_mw is not a budget metric; allowed: latency_ms, power_w, energy_mj"),
        ("budgets.latency_ms=[-1]", "budgets.latency_ms = [-1] must be positive numbers"),
    ],
)
def test_search_bad_budgets_are_one_line(run_dir, tmp_path, capsys, override, message):
    from app.search import run_search

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=[f"checkpoint={run_dir / 'train'}", override])
    line = user_error_line(lambda: run_search(cfg, tmp_path), capsys)
    assert message in line


def test_search_refuses_predictors_of_another_space(run_dir, shared_data, tmp_path):
    from omegaconf import OmegaConf

    from app.search import run_search
    from predictors.fit import FitSettings, fit_predictor

    lines = (shared_data / "ofa_mbv3_gpu_latency.csv").read_text().splitlines()[:201]
    table = tmp_path / "imagenet_latency.csv"
    table.write_text("\n".join(lines) + "\n")
    other = tmp_path / "imagenet_predictor"
    fit_predictor(table, "latency_ms_titan_rtx_b1", other, FitSettings(model="ridge", plot=False), space="ofa_mbv3_w10")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=[f"checkpoint={run_dir / 'train'}", f"predictors.latency_ms={other}",
                                           f"predictors.acc={run_dir / 'fit' / 'acc'}"])  # fmt: skip
    OmegaConf.set_struct(cfg, False)
    with pytest.raises(ValueError, match="refit it with ofa-fit for this space"):
        run_search(cfg, tmp_path / "out")


def test_search_logs_its_table_and_plots_to_an_offline_wandb_run(run_dir, tmp_path):
    cmd = [
        sys.executable, "-m", "app.search", f"checkpoint={run_dir / 'train'}", "threads=1",
        f"predictors.acc={run_dir / 'fit' / 'acc'}", f"predictors.latency_ms={run_dir / 'fit' / 'latency_ms'}",
        "budgets.latency_ms=[100]", "n_trials=60", "population_size=20", "measure_latency=false", "export=false",
        "wandb.enabled=true", "wandb.mode=offline", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"search/choices", b"search/evaluated", b"search/pareto"):
        assert key in records, key
