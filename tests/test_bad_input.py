"""Bad input, one line each (issue 19): command lines, device profiles, files at the door.

Each case asserts exit status 2 (through the commands' own reporting), a single line naming the
offending key, value or file, and, where something was written before, that it is unchanged.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.validate import check_command_line
from tests.conftest import user_error_line


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- command lines: checked before Hydra composes them -------------------------------------------
@pytest.mark.parametrize(
    ("command", "args", "names"),
    [
        ("train", ["supernet=nosuch"], ["supernet = 'nosuch'", "known: cifar, mnist"]),
        ("train", ["schedule=nosuch"], ["schedule = 'nosuch'", "progressive_shrinking, sandwich"]),
        ("train", ["data=nosuch"], ["data = 'nosuch'", "mnist5k"]),
        ("train", ["schedule=sandwich,nosuch"], ["schedule = 'nosuch'"]),  # a multirun sweep, each option
        ("search", ["n_trials=abc"], ["n_trials = 'abc'", "is an integer (default "]),
        ("search", ["population_size=1.5"], ["population_size = 1.5", "an integer"]),
        ("pipeline", ["stages.search.n_trials=abc"], ["stages.search.n_trials = 'abc'", "an integer"]),
        ("train", ["seed=true"], ["seed = True", "an integer"]),
        ("search", ["n_trails=10"], ["n_trails: no such key in search.yaml", "did you mean n_trials"]),
        ("profile", ["nosuchkey=3"], ["nosuchkey: no such key in profile.yaml", "+nosuchkey="]),
        ("train", ["lr=[1"], ["cannot read the command line"]),
    ],
)
def test_command_line_mistakes_are_one_line_naming_key_value_and_what_is_allowed(command, args, names, capsys):
    line = user_error_line(lambda: check_command_line(command, args), capsys)
    for name in names:
        assert name in line, line


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("train", ["supernet=cifar", "data=digits", "schedule=deps", "seed=3", "+supernet.width_mult=1.2"]),
        ("search", ["checkpoint=x", "budgets.latency_ms=[0.3,0.5]", "n_trials=100", "device=cpu-torch"]),
        ("pipeline", ["stages.fit.latency_model=ridge", "epochs_per_phase=1", "~stages.search.seed"]),
        ("profile", ["supernet=cifar", "n_subnets=3"]),  # the README's `ofa-profile supernet=<name>`
        ("train", ["-m", "schedule=sandwich,deps", "seed=range(0,3)"]),
        ("train", ["--cfg", "job"]),  # Hydra's own flags are Hydra's business
    ],
)
def test_good_command_lines_pass(command, args):
    check_command_line(command, args)


def test_a_bad_command_line_exits_2_in_one_line_and_leaves_no_run_folder(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "app.train", "schedule=nosuch", f"hydra.run.dir={run}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: UserError: schedule = 'nosuch'")
    assert not run.exists()


def test_pipeline_checks_every_stage_before_training(tmp_path):
    """A bad device for the profile stage used to be reported after minutes of training."""
    cmd = [sys.executable, "-m", "app.pipeline", "stages.profile.device=nosuchdev", f"run_dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "nosuchdev" in line and "known: cpu-ort" in line
    assert not (tmp_path / "run").exists()  # nothing trained, no folder left


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("stages.fit.latency_model=foo", ["stages.fit.model = 'foo'", "allowed: auto"]),
        ("stages.search.budgets_latency_ms=[0,-1]", ["budgets_latency_ms = [0, -1]", "positive numbers"]),
        ("stages.search.budget_quantiles=[0.5,2]", ["budget_quantiles", "between 0 and 1"]),
    ],
)
def test_pipeline_stage_settings_are_checked_up_front(override, names, tmp_path, capsys):
    from app.pipeline import run_pipeline
    from app.shell import compose

    cfg = compose("pipeline", [override])
    line = user_error_line(lambda: run_pipeline(cfg, tmp_path), capsys)
    for name in names:
        assert name in line, line
    assert not (tmp_path / "train").exists()


# --- device profiles are data: they never name code ------------------------------------------------
def test_a_profile_cannot_name_a_config_outside_conf_supernet(tmp_path, capsys):
    """A shared profile's `supernet:` joined into a path used to instantiate any YAML on disk."""
    from predictors.measure.profile import load_profile

    payload = tmp_path / "elsewhere" / "payload.yaml"
    payload.parent.mkdir()
    payload.write_text(yaml.safe_dump({"_target_": "builtins.print", "_args_": ["PAYLOAD RAN"]}))
    device = tmp_path / "evil"
    device.mkdir()
    profile = yaml.safe_load((Path(__file__).parent.parent / "hw_profiles/cpu-ort/profile.yaml").read_text())
    profile["supernet"] = "../../../../../../../../" + str(payload.with_suffix(""))
    (device / "profile.yaml").write_text(yaml.safe_dump(profile))
    line = user_error_line(lambda: load_profile("evil", root=tmp_path), capsys)
    assert "supernet = '../" in line and "known: cifar, mnist" in line
    assert "PAYLOAD RAN" not in capsys.readouterr().out
