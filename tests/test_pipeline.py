"""The main job (`ofa-pipeline`) end to end on the embedded data, and `ofa-search` on its outputs.

One short pipeline run (smoke schedule, a dozen sub-networks evaluated and profiled, 300 search
evaluations) is shared by the tests of this module.
"""

from __future__ import annotations

import csv
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
from ofa.space import ArchConfig
from tests.conftest import user_error_line

SMALL = [
    "experiment=smoke",
    "epochs_per_phase=1",  # the pipeline's own 12 would override the smoke experiment's 1
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
    "stages.search.loop_measurements=4",
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
        assert b["measured"]["latency_ms"] <= b["limits"]["latency_ms"]  # feasible as measured
        assert 0.0 <= b["measured"]["acc"] <= 1.0 and b["predicted"]["latency_ms"] > 0
        assert 0.0 <= b["test"]["acc"] <= 1.0 and 0.0 < b["test"]["se"] < 0.1 and b["test"]["n"] > 0
        assert b["macs"] > 0 and b["params"] > 0
    assert report["measured"] == 14 + 4  # the eval table's sub-networks and the loop's
    assert (run_dir / "search" / "pareto.png").stat().st_size > 10_000
    assert "| budget |" in (run_dir / "search" / "report.md").read_text()


def test_no_answer_is_beaten_by_a_subnetwork_the_run_measured(run_dir):
    """The run's own tables: every sub-network the eval stage or the loop measured that meets a
    budget (measured latency, or predicted with the margin) is no more accurate than its answer."""
    report = json.loads((run_dir / "search" / "report.json").read_text())
    with open(run_dir / "search" / "measured.csv", newline="") as f:
        measured = {r["arch"]: r for r in csv.DictReader(f)}
    with open(run_dir / "eval" / "accuracy.csv", newline="") as f:
        evaluated = [ArchConfig.from_csv_fields(r).key() for r in csv.DictReader(f)]
    assert set(evaluated) <= set(measured)  # the eval table's sub-networks were candidates too
    assert {r["latency_source"] for r in measured.values()} <= {"measured", "predicted + margin"}
    for b in report["budgets"]:
        limit, answer = b["limits"]["latency_ms"], measured[b["arch"]]
        assert answer["latency_source"] == "measured"  # the device runs here: the answer's latency is measured
        for r in measured.values():
            if float(r["latency_ms"]) <= limit:
                assert float(r["acc"]) <= float(answer["acc"]), (b["budget"], r["arch"])
    smallest = min(measured.values(), key=lambda r: float(r["latency_ms"]))
    assert all(b["measured"]["acc"] >= float(smallest["acc"]) for b in report["budgets"])


def test_a_resumed_loop_measures_nothing_twice(run_dir, tmp_path):
    from app.search import run_search

    def search(measurements: int) -> list[str]:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("search", overrides=[
                f"checkpoint={run_dir / 'train'}", f"predictors.acc={run_dir / 'fit' / 'acc'}",
                f"predictors.latency_ms={run_dir / 'fit' / 'latency_ms'}",
                f"loop.prior=[{run_dir / 'eval' / 'accuracy.csv'}]",
                "budgets.latency_ms=[100]", "n_trials=60", "population_size=20", "measure_latency=false",
                "export=false", "bn_calibration_images=64", f"loop.measurements={measurements}", "loop.per_budget=1",
            ])  # fmt: skip
        run_search(cfg, tmp_path)
        with open(tmp_path / "measured_accuracy.csv", newline="") as f:
            return [ArchConfig.from_csv_fields(r).key() for r in csv.DictReader(f)]

    first = search(2)
    assert len(first) == 2
    second = search(3)  # as if the first had been interrupted: it finishes, measuring one more
    assert second[:2] == first and len(second) == len(set(second)) == 3
    with open(run_dir / "eval" / "accuracy.csv", newline="") as f:
        assert not {ArchConfig.from_csv_fields(r).key() for r in csv.DictReader(f)} & set(second)
    assert search(3) == second  # done: a rerun measures nothing


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


@pytest.mark.slow  # a second pipeline / search process (keeps the default run under 8 minutes)
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
        "budgets.latency_ms=[0.001]", "n_trials=100", "population_size=20", "loop.measurements=2",
        f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: NoFeasibleArch: budget 'latency_ms<=0.001'") and "closest:" in line
    assert "measured sub-networks meets it" in line  # after every round of the loop
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


@pytest.mark.slow  # a second pipeline / search process (keeps the default run under 8 minutes)
def test_search_logs_its_table_and_plots_to_an_offline_wandb_run(run_dir, tmp_path):
    cmd = [
        sys.executable, "-m", "app.search", f"checkpoint={run_dir / 'train'}", "threads=1",
        f"predictors.acc={run_dir / 'fit' / 'acc'}", f"predictors.latency_ms={run_dir / 'fit' / 'latency_ms'}",
        "budgets.latency_ms=[100]", "n_trials=60", "population_size=20", "measure_latency=false", "export=false",
        "loop.measurements=0", "wandb.enabled=true", "wandb.mode=offline", f"hydra.run.dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"search/choices", b"search/evaluated", b"search/pareto"):
        assert key in records, key


def test_loop_never_believes_a_predicted_cost_below_the_smallest_subnets(run_dir, tmp_path):
    """Where latency is not measured, a predicted cost is floored at the space's smallest
    sub-network's prediction: a linear predictor's extrapolation to ~0 (or below) meets any budget."""
    from dataclasses import replace
    from types import SimpleNamespace

    from rich.console import Console

    from app.search import load_inputs
    from app.search_loop import SubnetMeasurer
    from ofa.errors import UserError

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=[
            f"checkpoint={run_dir / 'train'}", "measure_latency=false",
            f"predictors.acc={run_dir / 'fit' / 'acc'}", f"predictors.latency_ms={run_dir / 'fit' / 'latency_ms'}",
        ])  # fmt: skip
    inputs = load_inputs(cfg)
    real, space = inputs.metrics["latency_ms"], inputs.space
    smallest = {space.smallest(r) for r in space.resolutions}
    floor = float(np.min(real.fn(list(smallest))))
    archs = [space.sample(torch.Generator().manual_seed(i)) for i in range(50)]
    # A predictor right at the corner and far too low elsewhere (as a ridge extrapolating):
    too_low = replace(real, fn=lambda a: [real.fn([x])[0] - (0 if x in smallest else 10 * floor) for x in a])
    inputs.metrics["latency_ms"] = too_low
    measurer = SubnetMeasurer(inputs, SimpleNamespace(), cfg, tmp_path, Console(quiet=True))
    assert min(too_low.fn(archs)) < 0  # what the loop would have believed
    figures, sources = measurer.costs(archs, measure=False)
    assert set(sources) == {"predicted + margin"}
    assert min(f["latency_ms"] for f in figures) >= floor > 0
    # A predictor that is not positive even at the smallest sub-network is refused in one line.
    inputs.metrics["latency_ms"] = replace(real, fn=lambda a: np.asarray(real.fn(a)) - 2 * floor)
    with pytest.raises(UserError, match="smallest sub-network"):
        SubnetMeasurer(inputs, SimpleNamespace(), cfg, tmp_path, Console(quiet=True))


@pytest.mark.slow
def test_killed_search_loop_resumes_without_measuring_twice(run_dir, tmp_path):
    from tests.test_kill_resume import data_rows, kill_when, run_ok

    def cmd(out: Path) -> list[str]:
        return [
            sys.executable, "-m", "app.search", f"checkpoint={run_dir / 'train'}", "threads=1",
            f"predictors.acc={run_dir / 'fit' / 'acc'}", f"predictors.latency_ms={run_dir / 'fit' / 'latency_ms'}",
            "n_trials=200", "population_size=20", "loop.measurements=8", "loop.patience=100",
            "bn_calibration_images=128", f"loop.prior={run_dir / 'eval' / 'accuracy.csv'}", f"hydra.run.dir={out}",
        ]  # fmt: skip

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_ok(cmd(whole))
    kill_when(cmd(killed), lambda: len(data_rows(killed / "measured_accuracy.csv")) >= 3)
    at_kill = data_rows(killed / "measured_accuracy.csv")
    run_ok(cmd(killed))
    resumed = data_rows(killed / "measured_accuracy.csv")
    assert resumed[: len(at_kill)] == at_kill
    keys = [(r["ks"], r["e"], r["d"], r["r"]) for r in resumed]
    assert len(keys) == len(set(keys)) == len(data_rows(whole / "measured_accuracy.csv"))
    for folder in (whole, killed):
        report = json.loads((folder / "report.json").read_text())
        assert all(b["arch"] for b in report["budgets"])
