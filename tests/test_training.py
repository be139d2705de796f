from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from app.shell import CONF_DIR
from app.train import train
from ofa.checkpoint import load_supernet
from ofa.space import SPACES
from ofa.training.eval_subnets import eval_archs, evaluate_subnets, read_eval_data
from ofa.training.module import SupernetModule
from ofa.training.schedule import Phase, Schedule
from tests.conftest import user_error_line

# Progressive shrinking: the schedule with the most phases (reorganisation, phase hand-offs).
SMOKE = ["experiment=smoke", "schedule=progressive_shrinking"]
PS_PHASES = ["full", "kernel", "depth_1", "depth_2", "expand_1", "expand_2"]


def compose_cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def ofa_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[Path, object]:
    """One real smoke run of progressive shrinking, shared by the tests that read its outputs."""
    run_dir = tmp_path_factory.mktemp("smoke")
    result = train(compose_cfg("train", SMOKE), run_dir)
    return run_dir, result


# --- configs -------------------------------------------------------------------------------
def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in ("supernet", "data", "schedule", "trainer", "logger", "callbacks", "experiment")
        for o in group_options(g)
    ],
)
def test_every_train_config_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option not in ("mnist5k", "digits"):
        overrides.append("data.root=/nonexistent")
    cfg = compose_cfg("train", overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["name"]
    if group == "callbacks":
        from app.train import build_callbacks

        callbacks = build_callbacks(cfg, Path("/tmp/run"))
        assert callbacks and len(callbacks) == len(cfg.callbacks)
    if group == "schedule":
        schedule = Schedule.from_config(resolved["schedule"])
        schedule.validate_against(SPACES["mnist"])
        assert schedule.total_epochs >= len(schedule.phases)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF_DIR.glob("*.yaml")))
def test_every_primary_config_composes(name):
    cfg = compose_cfg(name, [])
    OmegaConf.to_container(cfg, resolve=False)
    assert len(cfg) > 0


def test_optional_callbacks_join_the_default_ones_and_run(tmp_path):
    overrides = [
        *SMOKE,
        "schedule=sandwich",
        "trainer.limit_train_batches=2",
        "callbacks=[default,lr_monitor,early_stopping]",
    ]
    result = train(compose_cfg("train", overrides), tmp_path)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    assert any(col.startswith("lr-SGD") for col in header), header  # LearningRateMonitor logged
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and result.global_step > 0


def test_deps_splits_its_epochs_by_the_fraction():
    cfg = compose_cfg("train", ["schedule=deps", "schedule.total_epochs=10", "schedule.shrink_start=0.3"])
    schedule = Schedule.from_config(OmegaConf.to_container(cfg.schedule, resolve=True))
    assert [p.epochs for p in schedule.phases] == [3, 7]


# --- schedules and sampling -----------------------------------------------------------------
def test_learning_rate_warms_up_then_follows_a_cosine():
    schedule = Schedule("s", (Phase("a", epochs=4, lr=0.1, warmup_epochs=1), Phase("b", epochs=2, lr=0.02)))
    assert schedule.lr(0, 0.0) < 0.001
    assert schedule.lr(0, 0.5) == pytest.approx(0.05, rel=0.01)
    assert schedule.lr(0, 1.0) == pytest.approx(0.1)
    assert schedule.lr(0, 2.5) == pytest.approx(0.05)
    assert schedule.lr(0, 4.0) == pytest.approx(0.0, abs=1e-12)
    assert schedule.lr(1, 0.0) == pytest.approx(0.02)
    assert [schedule.phase_index(e) for e in range(7)] == [0, 0, 0, 0, 1, 1, 1]


def test_bad_schedules_raise_clear_errors():
    with pytest.raises(ValueError, match="phase 0 \\(full\\): unknown key\\(s\\) lr_max"):
        Schedule.from_config({"phases": {"full": {"epochs": 1, "lr": 0.1, "lr_max": 1}}})
    with pytest.raises(ValueError, match="subnets_per_step was replaced by sandwich .* \\+ random_subnets"):
        Schedule.from_config({"phases": {"kernel": {"epochs": 1, "lr": 0.1, "subnets_per_step": 3}}})
    with pytest.raises(ValueError, match="random_subnets = -1 must be 0 or more"):
        Phase("x", epochs=1, lr=0.1, random_subnets=-1)
    # Corners only in an elastic phase: the sub-networks between them would never train.
    corners_only = Schedule("s", (Phase("kernel", epochs=1, lr=0.1, sandwich=True, expand_ratios=(6,), depths=(4,)),))
    with pytest.raises(ValueError, match="phase 'kernel': random_subnets = 0 while kernel_sizes vary; allowed"):
        corners_only.validate_against(SPACES["mnist"])
    # A phase of one architecture (only the resolution varies) trains that one.
    full = Phase("full", epochs=1, lr=0.1, kernel_sizes=(7,), expand_ratios=(6,), depths=(4,))
    Schedule("s", (full,)).validate_against(SPACES["mnist"])
    bad = Schedule("s", (Phase("k", epochs=1, lr=0.1, kernel_sizes=(3, 9)),))
    with pytest.raises(ValueError, match=r"kernel_sizes = \[3, 9\] has \[9\], not in the space; allowed: 3, 5, 7"):
        bad.validate_against(SPACES["mnist"])


def test_each_step_trains_the_corners_and_the_random_sub_networks_its_phase_names():
    from ofa.networks import OFAMobileNetV3

    space = SPACES["mnist"]
    phases = (
        Phase("full", epochs=1, lr=0.1, kernel_sizes=(7,), expand_ratios=(6,), depths=(4,)),
        Phase("kernel", epochs=1, lr=0.1, random_subnets=1, expand_ratios=(6,), depths=(4,)),
        Phase("all", epochs=1, lr=0.1, sandwich=True, random_subnets=2),
    )

    def module_in_phase(index: int) -> SupernetModule:
        schedule = Schedule("s", phases[index:])
        return SupernetModule(OFAMobileNetV3(space=space), schedule, seed=3, channels_last=False)

    r, archs = module_in_phase(0).sample_step(4)
    assert archs == [space.largest(r)]  # one architecture: the full network, at a drawn resolution

    kernel = module_in_phase(1)
    draws = [kernel.sample_step(step) for step in range(20)]
    assert all(len(archs) == 1 for _, archs in draws)
    assert len({archs[0] for _, archs in draws}) > 10
    for _, (arch,) in draws:
        assert set(arch.d) == {4} and {e for e in arch.e if e} == {6}

    everything = module_in_phase(2)
    for step in range(10):
        r, archs = everything.sample_step(step)
        assert archs[:2] == [space.largest(r), space.smallest(r)] and len(archs) == 4
        assert all(a.r == r and space.validate(a) == a for a in archs[2:])
    random_ones = {a for step in range(10) for a in everything.sample_step(step)[1][2:]}
    assert len(random_ones) == 20  # two new sub-networks every step
    # Every DDP rank (its own module, same seed) and a resumed run draw the same at each step.
    other_rank = module_in_phase(2)
    assert [other_rank.sample_step(s) for s in range(10)] == [everything.sample_step(s) for s in range(10)]


# --- a real smoke run -----------------------------------------------------------------------
def test_smoke_run_trains_every_phase_and_writes_its_outputs(smoke_run):
    run_dir, result = smoke_run
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts
    assert [f"phase{i + 1}-{name}.ckpt" for i, name in enumerate(PS_PHASES)] == sorted(
        c for c in ckpts if c.startswith("phase")
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["phases"] == PS_PHASES and metrics["global_step"] == 6 * 3
    for name in ("max", "min", "max_rmin", "min_rmax", "rand0"):
        assert 0.0 <= metrics["metrics"][f"val/acc_{name}"] <= 1.0
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        logged = list(csv.DictReader(f))
    assert {"train/loss", "train/lr", "val/acc_max", "val/acc_min"} <= set(logged[0])
    # Lightning checkpoints hold tensors and primitives only.
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["ofa"]["phases_started"] == list(range(6))
    supernet, meta = load_supernet(run_dir / "supernet.safetensors", SPACES["mnist"])
    assert meta["info"]["schedule"] == "progressive_shrinking"
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, state["state_dict"][f"supernet.{key}"]), key


def test_supernet_file_of_another_space_is_refused(smoke_run):
    run_dir, _ = smoke_run
    with pytest.raises(ValueError, match="holds a supernet of space .* expected"):
        load_supernet(run_dir / "supernet.safetensors", SPACES["ofa_mbv3_mnist"])


def test_eval_subnets_writes_resumable_rows(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    supernet, meta = load_supernet(run_dir / "supernet.safetensors")
    cfg = compose_cfg("eval_subnets", [f"checkpoint={run_dir}"])
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, seed=meta["info"]["seed"])
    archs = eval_archs(supernet.space, 6, seed=0)
    assert archs[0] == supernet.space.smallest(min(supernet.space.resolutions)) and len(set(archs)) == 6
    out = tmp_path / "acc.csv"
    seen = []
    evaluate_subnets(supernet, dm, archs[:4], out, 64, on_progress=lambda done, total: seen.append((done, total)))
    rows = evaluate_subnets(supernet, dm, archs, out, 64, on_progress=lambda done, total: seen.append((done, total)))
    # the second call evaluated only the 2 new ones
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4), (1, 2), (2, 2)] and len(rows) == 6
    for row, arch in zip(rows, archs):
        assert SPACES["mnist"].parse(row) == arch
        assert 0.0 <= float(row["acc"]) <= 1.0 and int(row["macs"]) == supernet.count_macs(arch)
    # data read once and passed in (the search loop's rounds) gives the same rows; a reader
    # passed as a function is not called when nothing is new
    reads = []

    def reader():
        reads.append(1)
        return read_eval_data(dm, 64)

    again = evaluate_subnets(supernet, dm, archs, tmp_path / "again.csv", 64, data=reader)
    assert [float(r["acc"]) for r in again] == [float(r["acc"]) for r in rows] and reads == [1]
    evaluate_subnets(supernet, dm, archs, tmp_path / "again.csv", 64, data=reader)
    assert reads == [1]


# --- command line ---------------------------------------------------------------------------
def test_resumes_after_being_killed(tmp_path):
    run_dir = tmp_path / "run"
    args = ofa_cmd(
        "app.train",
        *SMOKE,
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        "checkpoint.every_n_train_steps=1",
        "trainer.limit_train_batches=2",
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["global_step"] >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(last, weights_only=True)["global_step"]
    assert 3 <= step_at_kill < 12, "the run must be killed mid-way"
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming from {last}" in out.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 6 * 2  # the step count continued; no step was lost or repeated
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    # The second run appends to the first one's log: no step is logged twice.
    assert steps and steps == sorted(set(steps)) and steps[-1] > step_at_kill


def test_bad_input_is_one_line(tmp_path, capsys):
    # Through the console entry point once (Hydra, exit status, stderr) ...
    out = subprocess.run(
        ofa_cmd("app.train", *SMOKE, f"hydra.run.dir={tmp_path}", "data=cifar10"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: ValueError: dataset 'cifar10' reads a local copy: set data.root=<path>")
    )
    assert "Traceback" not in out.stderr
    # ... and the other bad inputs through the same reporting, in process.
    for override, message in [
        ("schedule.phases.full.lr=-1", "error: ValueError: phase 'full': lr = -1 must be positive"),
        (
            "schedule.phases.kernel.random_subnets=0",
            "error: ValueError: phase 'kernel': random_subnets = 0 while kernel_sizes vary; "
            "allowed: random_subnets >= 1",
        ),
        ("data=cifar10 data.root=/nonexistent", "error: FileNotFoundError: data root /nonexistent does not exist"),
    ]:
        cfg = compose_cfg("train", [*SMOKE, *override.split()])
        assert user_error_line(lambda cfg=cfg: train(cfg, tmp_path), capsys).startswith(message)


def test_sweep_command_lines_parse_and_run(tmp_path):
    """Expand each W&B sweep's command as the agent does (${args_no_hyphens} -> key=value) and
    run it on smoke settings, offline: the server is not needed to prove the command works."""
    sweeps = sorted((CONF_DIR / "sweeps").glob("*.yaml"))
    assert sweeps
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    for i, path in enumerate(sweeps):
        sweep = yaml.safe_load(path.read_text())
        if i > 0:  # every sweep's command parses; running one proves the path (they share it)
            cfg = compose_cfg("train", [f"{k}={v['values'][-1]}" for k, v in sweep["parameters"].items()])
            assert cfg.name and sweep["program"] == "ofa-train"
            continue
        args = [f"{k}={v['values'][-1]}" for k, v in sweep["parameters"].items()]
        cmd = []
        for part in sweep["command"]:
            if part == "${env}":
                continue
            if part == "${args_no_hyphens}":
                cmd += args
            elif part == sweep["program"]:
                cmd += ofa_cmd("app.train")
            else:
                cmd.append(part)
        cmd += [*SMOKE, "trainer.limit_train_batches=1", f"hydra.run.dir={tmp_path / str(i)}"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, (path.name, out.stderr[-3000:])
        assert list((tmp_path / str(i) / "wandb").glob("offline-run-*"))


def test_wandb_offline_run_folder_holds_the_metrics(tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true", "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    env.pop("WANDB_MODE", None)
    run_dir = tmp_path / "run"
    cmd = ofa_cmd(
        "app.train",
        *SMOKE,
        "logger=wandb",
        "epochs_per_phase=1",
        f"hydra.run.dir={run_dir}",
        "schedule=sandwich",
    )
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    for key in (b"val/acc_max", b"val/acc_min", b"train/loss", b"schedule"):
        assert key in records, key


@pytest.mark.slow
def test_multirun_trains_each_job(tmp_path):
    cmd = ofa_cmd(
        "app.train",
        "-m",
        *SMOKE,
        "trainer.limit_train_batches=1",
        "seed=0,1",
        f"hydra.sweep.dir={tmp_path}",
        "schedule=sandwich",
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.parent.name for p in tmp_path.glob("*/supernet.safetensors")) == ["0", "1"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_keeps_ranks_identical(tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = ofa_cmd(
        "app.train",
        *SMOKE,
        "trainer=ddp",
        "trainer.limit_train_batches=2",
        "schedule=sandwich",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    digests = metrics["rank_param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


@pytest.mark.parametrize(("launcher", "target"), [("ofa_slurm", "SlurmLauncher"), ("ofa_local", "LocalLauncher")])
def test_submitit_launcher_configs_compose(launcher, target):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == f"hydra_plugins.hydra_submitit_launcher.submitit_launcher.{target}"
    assert cfg.hydra.launcher.timeout_min > 0


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_multirun(tmp_path):
    cmd = ofa_cmd(
        "app.train", "-m", *SMOKE, "hydra/launcher=ofa_local", "trainer.limit_train_batches=1",
        "schedule=sandwich", "logger=none", "seed=0,1", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.parent.name for p in tmp_path.glob("*/supernet.safetensors")) == ["0", "1"]
