"""The pipeline from OFA's released supernet on ImageNet-layout folders (issue 18): no training,
the space of the file, images read with Pillow.

A tiny `train/` + `val/` folder (3 classes, JPEGs and PNGs of assorted sizes) stands in for
ImageNet, and the released-layout fixture (random weights, ofa_mbv3_w10, 1,000 classes) for the
released supernet: accuracy is near zero, which is fine; every stage must run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir

from app.pipeline import run_pipeline
from app.shell import CONF_DIR
from ofa.archtable import read_csv
from ofa.checkpoint import read_supernet_metadata
from ofa.data.datamodule import ImageDataModule
from ofa.data.imagefolder import CROP_FRACTION, eval_transform
from ofa.export import load_subnet
from ofa.importer import import_ofa_checkpoint
from ofa.space import SPACES
from tests.conftest import user_error_line

FIXTURE = "ofa_reference/ofa_mbv3_w10_random.pth"
CLASSES = ("n01440764", "n01443537", "n01484850")  # ImageNet's first three synsets: labels 0, 1, 2
SIZES = ((320, 240), (180, 260), (256, 256), (500, 140))  # landscape, portrait, square, a strip
STAGES = ("train", "eval", "profile", "fit", "search")
SMALL = [
    "supernet=ofa_mbv3_w10",
    "data=imagefolder",
    "data.num_workers=0",
    "data.eval_batch_size=4",  # several batches: the per-batch progress runs
    "threads=1",
    "stages.eval.n_subnets=12",
    "stages.eval.bn_calibration_images=8",
    "stages.profile.n_subnets=12",
    "stages.profile.overrides.timing.rounds=2",
    "+stages.profile.overrides.timing.warmup=2",
    "+stages.profile.overrides.timing.min_round_ms=5",
    "+stages.profile.overrides.noise.max_remeasure=0",
    "+stages.profile.overrides.noise.group_retries=0",
    "stages.fit.latency_model=ridge",
    "stages.fit.accuracy_model=ridge",
    "stages.search.n_trials=100",
    "stages.search.population_size=20",
    "stages.search.bn_calibration_images=8",
    "stages.search.loop_measurements=2",
]


def write_image_folder(root: Path, per_class: int = 4) -> Path:
    """root/{train,val}/<synset>/*.jpg|png, random pictures of assorted sizes and modes."""
    rng = np.random.default_rng(0)
    from PIL import Image

    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                w, h = SIZES[i % len(SIZES)]
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                pixels[..., c] = 255  # each class a tint
                image = Image.fromarray(pixels)
                if i == 3:
                    image.convert("L").save(folder / f"{split}_{i}.PNG")  # grayscale, upper-case suffix
                else:
                    image.save(folder / f"{split}_{i}.jpg", quality=90)
            (folder / "notes.txt").write_text("not an image")  # skipped
    return root


def pipeline(run_dir: Path, overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("pipeline", overrides=[*SMALL, *overrides])
        return run_pipeline(cfg, run_dir)


@pytest.fixture(scope="module")
def released() -> Path:
    """The released-layout fixture (conftest's `shared_data` is per test; this one is shared)."""
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / FIXTURE
    if not path.is_file():
        pytest.skip(f"fixture {path} not found")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, released, images) -> Path:
    folder = tmp_path_factory.mktemp("pipeline")
    pipeline(folder, [f"supernet_file={released}", f"data.root={images}"])
    return folder


def test_the_image_folder_reads_lazily_with_ofa_preprocessing(images):
    dm = ImageDataModule(name="imagefolder", root=str(images), image_size=160, test_fraction=0.5, seed=0)
    dm.setup()
    assert dm.num_classes == 3 and dm.train_set.classes == list(CLASSES)
    assert len(dm.train_set) == 12 and sorted(set(dm.train_set.targets)) == [0, 1, 2]
    assert len(dm.val_set) == 6 and len(dm.test_set) == 6  # val/ in halves, stratified
    assert not set(dm.val_set.indices) & set(dm.test_set.indices)
    assert all(isinstance(path, str) for path, _ in dm.train_set.samples)  # paths only: read when used
    x, y = dm.train_set[3]  # the grayscale PNG
    assert x.shape == (3, 160, 160) and x.dtype == torch.float32 and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert y == 0
    # OFA's evaluation crop: the shorter side to ceil(160 / 0.875) = 183, then the centre 160 x 160.
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, (140, 500, 3), dtype=np.uint8)
    resized = Image.fromarray(pixels).resize((int(183 * 500 / 140), 183), Image.Resampling.BILINEAR)
    left, top = round((653 - 160) / 2), round((183 - 160) / 2)
    expected = np.asarray(resized.crop((left, top, left + 160, top + 160)), dtype=np.float32) / 255
    got = eval_transform(Image.fromarray(pixels), 160).permute(1, 2, 0).numpy()
    assert math.ceil(160 / CROP_FRACTION) == 183
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_val_limit_keeps_a_stratified_subset_in_both_splits(images):
    dm = ImageDataModule(name="imagefolder", root=str(images), test_fraction=0.5, val_limit=4, seed=0)
    dm.setup()
    assert len(dm.val_set) == 2 and len(dm.test_set) == 2
    full = ImageDataModule(name="imagefolder", root=str(images), test_fraction=0.5, seed=0)
    full.setup()
    assert set(dm.val_set.indices) <= set(full.val_set.indices)
    assert set(dm.test_set.indices) <= set(full.test_set.indices)
    labels = [dm.val_set.dataset.targets[i] for i in dm.val_set.indices]
    assert len(set(labels)) == 2  # two images from two classes, not two of one
    again = ImageDataModule(name="imagefolder", root=str(images), test_fraction=0.5, val_limit=4, seed=0)
    again.setup()
    assert list(again.val_set.indices) == list(dm.val_set.indices)  # the same every run
    with pytest.raises(ValueError, match=r"val_limit = 1 is not allowed; allowed: null or an integer >= 2"):
        ImageDataModule(name="imagefolder", root=str(images), test_fraction=0.5, val_limit=1)


def test_evaluation_reports_each_validation_batch_and_refuses_more_classes_than_outputs(images, released, tmp_path):
    from ofa.networks import OFAMobileNetV3
    from ofa.training.eval_subnets import evaluate_subnets

    supernet, _ = import_ofa_checkpoint(released)
    dm = ImageDataModule(name="imagefolder", root=str(images), image_size=128, test_fraction=0.5, eval_batch_size=2)
    subnets, batches = [], []
    arch = supernet.space.smallest(128)
    rows = evaluate_subnets(supernet, dm, [arch], tmp_path / "acc.csv", 4,
                            lambda d, n: subnets.append((d, n)), lambda d, n: batches.append((d, n)))  # fmt: skip
    assert subnets == [(1, 1)] and len(rows) == 1
    assert batches == [(1, 3), (2, 3), (3, 3)] * 2  # reading the 6 validation images, then classifying them
    small = OFAMobileNetV3(space=SPACES["mnist"].with_(num_classes=2, in_channels=3))
    with pytest.raises(ValueError, match=r"dataset imagefolder has 3 classes but the supernet \(mnist\) predicts 2"):
        evaluate_subnets(small, dm, [small.space.smallest()], tmp_path / "small.csv", 4)


@pytest.mark.parametrize(
    ("layout", "error", "message"),
    [
        ("nowhere", FileNotFoundError, "data root {root} does not exist"),
        ("a-file", FileNotFoundError, "data root {root} is not a folder (imagefolder expects {root}/train and"),
        ("no-train", FileNotFoundError, "imagefolder expects {root}/train with one sub-folder per class"),
        ("no-val", FileNotFoundError, "imagefolder expects {root}/val with one sub-folder per class"),
        ("no-classes", ValueError, "{root}/train has no class sub-folders"),
        ("empty-class", ValueError, f"{{root}}/val/{CLASSES[1]} holds no images (.jpg, .jpeg, .png"),
        ("foreign-class", ValueError, "{root}/val has class folders that train/ lacks (n99999999)"),
    ],
)
def test_a_bad_image_folder_is_one_clear_line(tmp_path, capsys, layout, error, message):
    import shutil

    root = tmp_path / "data"
    if layout == "a-file":
        root.write_text("")
    elif layout != "nowhere":
        write_image_folder(root, per_class=1)
    if layout in ("no-train", "no-val"):
        shutil.rmtree(root / layout.removeprefix("no-"))
    elif layout == "no-classes":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
    elif layout == "empty-class":
        for f in (root / "val" / CLASSES[1]).iterdir():
            f.unlink()
    elif layout == "foreign-class":
        (root / "val" / "n99999999").mkdir()
    dm = ImageDataModule(name="imagefolder", root=str(root), test_fraction=0.5)
    line = user_error_line(dm.setup, capsys)
    assert line.startswith(f"error: {error.__name__}: ") and message.format(root=root) in line, line


def test_the_pipeline_runs_every_stage_from_the_released_file_without_training(run_dir, released):
    for stage in STAGES:
        record = json.loads((run_dir / stage / "stage.json").read_text())
        assert record["complete"], stage
    train = run_dir / "train"
    assert not (train / "checkpoints").exists() and not list(train.rglob("*.ckpt"))  # nothing trained
    meta = read_supernet_metadata(train / "supernet.safetensors")
    space = SPACES["ofa_mbv3_w10"]
    assert meta["space_fingerprint"] == space.fingerprint() and meta["info"]["data"] == "imagenet"
    assert "seed" not in meta["info"]
    from safetensors.torch import load_file

    imported, info = import_ofa_checkpoint(released)
    assert meta["info"]["sha256"] == info["sha256"]
    stored = load_file(str(train / "supernet.safetensors"))
    assert stored.keys() == imported.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in imported.state_dict().items())
    record = json.loads((train / "stage.json").read_text())
    assert record["config"]["supernet_file"]["sha256"] == info["sha256"]


def test_eval_rows_are_of_the_w10_space_and_the_search_answers_each_budget(run_dir):
    table = read_csv(run_dir / "eval" / "accuracy.csv", "accuracy table")
    assert len(table.rows) == 12
    assert {r["fingerprint"] for r in table.rows} == {SPACES["ofa_mbv3_w10"].fingerprint()}
    assert {int(r["r"]) for r in table.rows} >= {128, 224}
    measurements = read_csv(run_dir / "profile" / "measurements.csv", "measurement table")
    assert {r["fingerprint"] for r in measurements.rows} == {SPACES["ofa_mbv3_w10"].fingerprint()}
    report = json.loads((run_dir / "search" / "report.json").read_text())
    assert len(report["budgets"]) == 3
    for b in report["budgets"]:
        assert b["arch"] or b["message"]  # an answer, or why not
    assert any(b["arch"] for b in report["budgets"])
    assert report["space"].startswith("ofa_mbv3_w10")
    assert report["validation_images"] == 6 and report["test_images"] == 6


def test_an_exported_answer_runs_in_onnxruntime(run_dir):
    report = json.loads((run_dir / "search" / "report.json").read_text())
    answer = next(b for b in report["budgets"] if b["arch"])
    net = load_subnet(answer["export"])
    x = torch.randn(1, 3, net.arch.r, net.arch.r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x).numpy()
    session = ort.InferenceSession(str(Path(answer["export"]) / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == (1, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_a_supernet_file_of_another_space_is_one_line(run_dir, released, images, tmp_path, capsys):
    line = user_error_line(lambda: pipeline(tmp_path, [f"supernet_file={released}", f"data.root={images}",
                                                       "supernet=mnist"]), capsys)  # fmt: skip
    assert "ofa_mbv3_w10_random.pth holds a supernet of space ofa_mbv3_w10" in line
    assert line.endswith("set supernet=ofa_mbv3_w10")
    line = user_error_line(lambda: pipeline(tmp_path, [f"supernet_file={tmp_path / 'none.pth'}"]), capsys)
    assert "supernet_file" in line and "does not exist" in line


@pytest.mark.slow  # two more pipeline runs (keeps the default run under 8 minutes)
def test_the_same_file_skips_every_stage_and_another_reruns_what_reads_the_weights(run_dir, released, images, tmp_path):
    import shutil

    from rich.console import Console

    copy = tmp_path / "pipeline"  # a copy: the shared run folder stays as the other tests read it
    shutil.copytree(run_dir, copy)

    def rerun(*overrides: str) -> str:
        console = Console(record=True, width=200)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            run_pipeline(compose("pipeline", overrides=[*SMALL, f"data.root={images}", *overrides]), copy, console)
        return console.export_text()

    text = rerun(f"supernet_file={released}")
    assert all(f"stage {s}: current" in text for s in STAGES), text
    # Other data: the weights and latencies stand, what measures accuracy reruns.
    text = rerun(f"supernet_file={released}", "data.val_limit=4")
    assert "stage train: current" in text and "stage profile: current" in text, text
    assert all(f"stage {s}: inputs changed" in text for s in ("eval", "fit", "search")), text
    assert json.loads((copy / "search" / "report.json").read_text())["validation_images"] == 2
    # The same weights as a supernet.safetensors in a run folder: another file, so another digest.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(run_dir / "train" / "supernet.safetensors", other / "supernet.safetensors")
    text = rerun(f"supernet_file={other}")
    assert "stage profile: current" in text  # latency does not depend on the weights
    assert all(f"stage {s}: inputs changed" in text for s in ("train", "eval", "fit", "search")), text
    assert (copy / "train" / "supernet.safetensors").read_bytes() == (other / "supernet.safetensors").read_bytes()
    assert not (copy / "train" / "checkpoints").exists()
