"""Bad input, one line each (issue 19): command lines, device profiles, files at the door.

Each case asserts exit status 2 (through the commands' own reporting), a single line naming the
offending key, value or file, and, where something was written before, that it is unchanged.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
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
        ("profile", ["seed=-1"], ["seed = -1 is not allowed: seed is an integer >= 0"]),
        ("fit", ["split_seed=-3"], ["split_seed = -3 is not allowed", "an integer >= 0"]),
        ("pipeline", ["stages.eval.seed=-1"], ["stages.eval.seed = -1", "an integer >= 0"]),
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
        ("stages.search.loop_measurements=-1", ["stages.search.loop_measurements = -1", "an integer >= 0"]),
        ("stages.eval.n_subnets=0", ["stages.eval.n_subnets = 0 is not allowed", "an integer >= 1"]),
        ("stages.profile.n_subnets=1", ["stages.profile.n_subnets = 1 is not allowed", "an integer >= 2"]),
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


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("loop.measurements=-3", ["loop.measurements = -3 is not allowed", "an integer >= 0"]),
        ("loop.per_budget=0", ["loop.per_budget = 0 is not allowed", "null or an integer >= 1"]),
        ("measure_latency=maybe", ["measure_latency = 'maybe' is not allowed; allowed: auto, true, false"]),
        ("measure_latency=1", ["measure_latency = 1 is not allowed; allowed: auto, true, false"]),
        ("loop.prior=/no/such/accuracy.csv", ["loop.prior: accuracy table /no/such/accuracy.csv not found"]),
        ("storage=study.txt", ["storage = 'study.txt' is not allowed", "journal file"]),
        ("population_size=1", ["population_size = 1 is not allowed", "integer >= 2"]),
        ("bn_calibration_images=0", ["bn_calibration_images = 0 is not allowed"]),
    ],
)
def test_search_settings_are_checked_before_anything_is_loaded(override, names, tmp_path, capsys):
    """These used to run a whole search (or fail after it had started) instead of one line."""
    from app.config import compose
    from app.search import run_search

    cfg = compose("search", ["checkpoint=/no/such/supernet.safetensors", override])
    line = user_error_line(lambda: run_search(cfg, tmp_path / "out"), capsys)
    for name in names:
        assert name in line, line
    assert "supernet" not in line  # checked before the (missing) supernet is looked for


@pytest.mark.parametrize(
    ("command", "override", "names"),
    [
        ("eval_subnets", "n_subnets=-5", ["n_subnets = -5 is not allowed; allowed: an integer >= 1"]),
        ("eval_subnets", "bn_calibration_images=0", ["bn_calibration_images = 0 is not allowed"]),
        ("search_bench", "queries=0", ["queries = 0 is not allowed; allowed: null or an integer >= 1"]),
    ],
)
def test_counts_that_cannot_work_are_one_line(command, override, names, tmp_path, capsys):
    """These were an IndexError, a RuntimeError from torch, and a silent direct search."""
    from app import eval_subnets, search_bench
    from app.config import compose

    if command == "eval_subnets":  # checked before the (missing) supernet is looked for
        cfg, task = compose(command, ["checkpoint=/no/such/supernet.safetensors", override]), eval_subnets.run
    else:
        cfg, task = compose(command, [override]), search_bench.bench
    line = user_error_line(lambda: task(cfg), capsys)
    for name in names:
        assert name in line, line


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


# --- files at the door: corrupt, truncated or foreign files are one line naming the file -----------
@pytest.fixture(scope="module")
def supernet_file(tmp_path_factory) -> Path:
    from ofa.checkpoint import save_supernet
    from ofa.networks import OFAMobileNetV3

    path = tmp_path_factory.mktemp("supernet") / "supernet.safetensors"
    save_supernet(path, OFAMobileNetV3.from_preset("mnist"), {"data": "mnist5k", "seed": 0})
    return path


def corrupt_copies(source: Path, folder: Path) -> dict[str, Path]:
    """Random bytes, the first half of the real file, and the real file with its tail overwritten."""
    rng = np.random.default_rng(0)
    data = source.read_bytes()
    files = {
        "random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated": data[: len(data) // 2],
        "empty": b"",
    }
    out = {}
    for name, blob in files.items():
        out[name] = folder / f"{name}.safetensors"
        out[name].write_bytes(blob)
    return out


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
@pytest.mark.parametrize("command", ["eval_subnets", "search", "train_teacher"])
def test_corrupt_supernet_files_are_one_line_naming_the_file(kind, command, supernet_file, tmp_path, capsys):
    from app.config import compose

    bad = corrupt_copies(supernet_file, tmp_path)[kind]
    if command == "eval_subnets":
        from app.eval_subnets import run

        cfg = compose("eval_subnets", [f"checkpoint={bad}", f"output={tmp_path / 'acc.csv'}"])
        task = lambda: run(cfg)  # noqa: E731
    elif command == "search":
        from app.search import run_search

        cfg = compose("search", [f"checkpoint={bad}"])
        task = lambda: run_search(cfg, tmp_path / "search")  # noqa: E731
    else:
        from app.train import build_module
        from ofa.networks import OFAMobileNetV3

        cfg = compose("train", [f"kd.teacher={bad}"])
        task = lambda: build_module(cfg, OFAMobileNetV3.from_preset("mnist"))  # noqa: E731
    line = user_error_line(task, capsys)
    assert str(bad) in line and "not a readable supernet file" in line, line


def test_a_resumed_training_skips_an_unreadable_last_checkpoint_for_the_newest_phase_one(tmp_path, capsys):
    from app.config import compose
    from app.train import train
    from ofa.training.train import resume_point

    run_dir = tmp_path / "run"
    cfg = compose("train", ["experiment=smoke", "logger=none", "threads=1"])
    train(cfg, run_dir)
    checkpoints = run_dir / "checkpoints"
    last, phase = checkpoints / "last.ckpt", next(checkpoints.glob("phase*.ckpt"))
    assert resume_point(run_dir) == (last, [])
    last.write_bytes(last.read_bytes()[:100_000])  # a kill mid-write of a non-atomic copy
    before = sha(phase)
    chosen, notes = resume_point(run_dir)
    assert chosen == phase and str(last) in notes[0] and "unreadable" in notes[0]
    train(cfg, run_dir)  # resumes from the phase checkpoint, and says so
    assert f"resuming from {phase} instead" in capsys.readouterr().out
    assert sha(phase) == before
    # With every checkpoint unreadable, nothing is overwritten: one line says what to do.
    for path in checkpoints.glob("*.ckpt"):
        path.write_bytes(b"\0" * 64)
    line = user_error_line(lambda: train(cfg, run_dir), capsys)
    assert "last.ckpt is unreadable" in line and "resume=false" in line


def test_fit_refuses_an_out_that_is_a_file_and_a_negative_latency(tmp_path, capsys):
    from app.config import compose
    from app.fit import fit_from_config

    table = Path(__file__).parent.parent / "hw_profiles/cpu-ort/measurements.csv"
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    cfg = compose("fit", [f"table={table}", "target=latency_ms", f"out={taken}"])
    line = user_error_line(lambda: fit_from_config(cfg), capsys)
    assert f"out = {taken} is a file" in line and taken.read_text() == "keep me"
    rows = table.read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("latency_ms")
    cells = rows[2].split(",")
    cells[col] = "-0.2"
    negative = tmp_path / "negative.csv"
    negative.write_text("\n".join([rows[0], rows[1], ",".join(cells), *rows[3:]]) + "\n")
    cfg = compose("fit", [f"table={negative}", "target=latency_ms", f"out={tmp_path / 'p'}"])
    line = user_error_line(lambda: fit_from_config(cfg), capsys)
    assert "line 3: latency_ms = '-0.2' is not allowed" in line
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda d: d["model"]["config"].update(nosuchkey=1), ["model section cannot be read", "nosuchkey"]),
        (lambda d: d["tensors"].update(file="../../elsewhere.safetensors"), ["tensors.file = '../../elsewhere"]),
    ],
)
def test_a_hand_edited_predictor_json_is_one_line(edit, names, tmp_path, capsys):
    import json
    import shutil

    from ofa.space import SPACES
    from predictors.predictor import load_predictor

    source = Path(__file__).parent.parent / "hw_profiles/cpu-ort/predictors/latency_ms"
    folder = tmp_path / "p"
    shutil.copytree(source, folder)
    doc = json.loads((folder / "predictor.json").read_text())
    if doc.get("tensors") is None:
        pytest.skip("the shipped latency predictor has no tensors file")
    edit(doc)
    (folder / "predictor.json").write_text(json.dumps(doc))
    line = user_error_line(lambda: load_predictor(folder, SPACES["mnist"]), capsys)
    for name in names:
        assert name in line, line


def test_a_supernet_is_not_evaluated_on_another_dataset_unless_allowed(supernet_file, capsys):
    from ofa.checkpoint import check_trained_on, read_supernet_metadata

    meta = read_supernet_metadata(supernet_file)
    line = user_error_line(lambda: check_trained_on(meta, "digits"), capsys)
    assert "data = 'digits' is not the dataset this supernet was trained on ('mnist5k')" in line
    assert check_trained_on(meta, "digits", allow_other=True) == "mnist5k"
    assert check_trained_on({"info": {}}, "digits") is None  # a file that records none
    assert check_trained_on({"info": {"data": "imagenet"}}, "imagefolder") == "imagenet"  # an imported OFA file


def test_a_sub_network_folder_appears_whole_or_not_at_all(tmp_path):
    from ofa.io import atomic_folder

    target = tmp_path / "subnets" / "b0"
    with atomic_folder(target) as folder:
        (folder / "arch.json").write_text("{}")
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as folder:
        (folder / "weights.safetensors").write_bytes(b"x")
        raise KeyboardInterrupt  # killed between the two files
    assert sorted(p.name for p in target.iterdir()) == before == ["arch.json"]
    assert [p.name for p in target.parent.iterdir()] == ["b0"]  # no half-written sibling left


def test_ranks_that_disagree_stop_in_one_line(capsys):
    from ofa.training.callbacks import check_ranks_agree

    check_ranks_agree(["0abc", "0abc"], "sub-networks of step 3")
    line = user_error_line(lambda: check_ranks_agree(["0abc", "0abd"], "sub-networks of step 3"), capsys)
    assert "DDP ranks disagree on the sub-networks of step 3 (rank 0: 0abc, rank 1: 0abd)" in line


def test_a_run_folder_that_is_an_existing_file_is_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    line = user_error_line(lambda: check_command_line("fit", ["table=t.csv", "target=acc", f"out={taken}"]), capsys)
    assert f"the run folder {taken} is an existing file" in line and taken.read_text() == "keep me"


def test_an_arch_json_cannot_point_its_weights_outside_its_folder(tmp_path, capsys):
    import json

    from ofa.export import load_subnet, save_subnet
    from ofa.networks import OFAMobileNetV3

    supernet = OFAMobileNetV3.from_preset("mnist")
    arch = supernet.space.smallest()
    folder = save_subnet(tmp_path / "sub", supernet.space, arch, supernet.extract_subnet(arch))
    meta = json.loads((folder / "arch.json").read_text())
    meta["weights"] = "../elsewhere/weights.safetensors"
    (folder / "arch.json").write_text(json.dumps(meta))
    line = user_error_line(lambda: load_subnet(folder), capsys)
    assert "weights = '../elsewhere/weights.safetensors' is not allowed" in line


@pytest.mark.parametrize("value", ["abc", 0, 1.5])
def test_a_bad_epochs_per_phase_is_one_line_before_training(value, capsys):
    from app.config import compose
    from app.train import build_module
    from ofa.networks import OFAMobileNetV3

    cfg = compose("train", [f"epochs_per_phase={value}"])
    line = user_error_line(lambda: build_module(cfg, OFAMobileNetV3.from_preset("mnist")), capsys)
    assert f"epochs_per_phase = {value!r} is not allowed" in line


def test_an_unknown_subnet_loss_reduction_is_one_line_before_training(capsys):
    from app.config import compose
    from app.train import build_module
    from ofa.networks import OFAMobileNetV3

    cfg = compose("train", ["optim.subnet_losses=avg"])
    line = user_error_line(lambda: build_module(cfg, OFAMobileNetV3.from_preset("mnist")), capsys)
    assert "optim.subnet_losses = 'avg' is not allowed; allowed: mean, sum" in line


def test_an_unknown_label_smoothing_target_is_one_line_before_training(capsys):
    from app.config import compose
    from app.train import build_module
    from ofa.networks import OFAMobileNetV3

    cfg = compose("train", ["optim.label_smoothing_on=smallest"])
    line = user_error_line(lambda: build_module(cfg, OFAMobileNetV3.from_preset("mnist")), capsys)
    assert "optim.label_smoothing_on = 'smallest' is not allowed; allowed: largest, all" in line


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ("optim.grad_clip=-1", "optim.grad_clip = -1 is not allowed; allowed: null or a number > 0"),
        ("optim.label_smoothing=1.5", "optim.label_smoothing = 1.5 is not allowed; allowed: a number in [0, 1)"),
        ("optim.momentum=1.2", "optim.momentum = 1.2 is not allowed"),
        ("validation.bn_calibration_images=0", "validation.bn_calibration_images = 0 is not allowed"),
        ("validation.panel_random=-1", "validation.panel_random = -1 is not allowed; allowed: an integer >= 0"),
    ],
)
def test_training_settings_out_of_range_are_one_line_before_training(override, name, capsys):
    """These trained silently (a negative clip, a negative panel) or failed in torch after an epoch."""
    from app.config import compose
    from app.train import build_module
    from ofa.networks import OFAMobileNetV3

    cfg = compose("train", [override])
    line = user_error_line(lambda: build_module(cfg, OFAMobileNetV3.from_preset("mnist")), capsys)
    assert name in line, line


def test_a_negative_thread_count_is_one_line(tmp_path, capsys):
    from app.config import compose
    from app.train import train

    line = user_error_line(lambda: train(compose("train", ["threads=-2"]), tmp_path / "run"), capsys)
    assert "threads = -2 is not allowed; allowed: null, 0 (torch's default) or an integer >= 1" in line
    assert not (tmp_path / "run").exists()


def test_a_bad_row_in_a_prior_accuracy_table_names_the_line_and_no_option_the_search_lacks(tmp_path, capsys):
    from app.search_loop import read_prior
    from ofa.archtable import write_rows
    from ofa.space import SPACES

    space = SPACES["mnist"]
    row = {**space.smallest(min(space.resolutions)).to_csv_fields(), "acc": 0.9}
    bad = {**row, "r": 30}
    table = tmp_path / "accuracy.csv"
    write_rows(table, [row, bad], [*row])
    line = user_error_line(lambda: read_prior([table], space), capsys)
    assert f"{table} line 3: r = 30 is not allowed" in line and "(space mnist)" in line, line
