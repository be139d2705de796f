from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import subprocess
import sys

import pytest
import torch

from ofa.space import SPACES, ArchConfig, MBV3Space, get_space

W10 = SPACES["ofa_mbv3_w10"]


def arch20(ks=3, e=3, d=4, r=224) -> dict:
    return {"ks": [ks] * 20, "e": [e] * 20, "d": [d] * 5, "r": r}


def test_skipped_slots_are_canonical():
    a = ArchConfig.from_dict({"ks": [7, 5, 3, 7] * 5, "e": [6, 4, 3, 6] * 5, "d": [2] * 5, "r": 160})
    b = ArchConfig.from_dict({"ks": [7, 5, 5, 5] * 5, "e": [6, 4, 4, 4] * 5, "d": [2] * 5, "r": 160})
    assert a == b and hash(a) == hash(b) and a.key() == b.key()
    assert a.ks[:4] == (7, 5, 0, 0)
    assert len({a, b}) == 1
    c = ArchConfig.from_dict({"ks": [7, 5, 3, 7] * 5, "e": [6, 4, 3, 6] * 5, "d": [3] + [2] * 4, "r": 160})
    assert c != a


def test_arch_is_immutable():
    a = W10.largest()
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.r = 128  # type: ignore[misc]


def test_json_and_csv_round_trip():
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        a = W10.sample(g)
        assert ArchConfig.from_dict(a.to_dict(), W10) == a
        assert ArchConfig.from_json(a.to_json(), W10) == a
        assert ArchConfig.from_csv_fields(a.to_csv_fields(), W10) == a
        assert json.loads(a.to_json()) == a.to_dict()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**arch20(), "ks": [3] * 5 + [4] + [3] * 14}, "ks[5] = 4 is not allowed; allowed: 3, 5, 7"),
        ({**arch20(), "e": [3] * 19 + [5]}, "e[19] = 5 is not allowed; allowed: 3, 4, 6"),
        ({**arch20(), "d": [4, 4, 1, 4, 4]}, "d[2] = 1 is not allowed; allowed: 2, 3, 4"),
        ({**arch20(), "d": [4, 4, 5, 4, 4]}, "d[2] = 5 is not allowed"),
        ({**arch20(), "r": 130}, "r = 130 is not allowed; allowed: 128, 132,"),
        ({**arch20(), "d": [4] * 3}, "ks has 20 values, not a multiple of the 3 stages"),
        ({**arch20(), "ks": [3] * 16, "e": [3] * 16, "d": [4] * 4}, "d has 4 values; this space needs 5"),
        ({**arch20(), "e": [3] * 19}, "ks has 20 values but e has 19"),
        ({**arch20(), "ks": [3.5] * 20}, "ks[0] = 3.5 is not an integer"),
        ({**arch20(), "r": "big"}, "r = 'big' is not an integer"),
        ({**arch20(), "depth": 3}, "unexpected depth"),
        ({"ks": [3] * 20, "e": [3] * 20, "r": 224}, "missing d"),
    ],
)
def test_bad_configs_raise_clear_value_error(data, message):
    with pytest.raises(ValueError) as err:
        ArchConfig.from_dict(data, W10)
    assert message in str(err.value)


def test_skipped_slot_values_need_not_be_valid_choices():
    # A slot beyond the stage's depth carries no meaning, so its value is not checked.
    data = arch20(d=2)
    data["ks"][3] = 4
    assert ArchConfig.from_dict(data, W10).ks[3] == 0


def test_every_row_of_the_shared_csv_parses_and_validates(shared_data):
    with open(shared_data / "ofa_mbv3_gpu_latency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5000
    archs = [ArchConfig.from_csv_fields(row, W10) for row in rows]
    for row, arch in zip(rows, archs):
        assert list(arch.d) == [int(v) for v in row["d"].split("-")]
        assert arch.r == int(row["r"])
        for slot in arch.active_slots():
            assert arch.ks[slot] == int(row["ks"].split("-")[slot])
        assert ArchConfig.from_csv_fields(arch.to_csv_fields(), W10) == arch


def test_fingerprint_is_stable_and_distinguishes_spaces():
    prints = {name: space.fingerprint() for name, space in SPACES.items()}
    assert len(set(prints.values())) == len(prints)
    assert W10.with_(num_classes=10).fingerprint() != W10.fingerprint()
    assert MBV3Space().fingerprint() == W10.fingerprint()  # the name is not part of the structure
    code = "from ofa.space import SPACES; print(SPACES['ofa_mbv3_w10'].fingerprint())"
    other_process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == prints["ofa_mbv3_w10"]


def test_space_round_trips_through_dict():
    for space in SPACES.values():
        assert MBV3Space.from_dict(space.to_dict()) == space
    with pytest.raises(ValueError, match="unknown space field"):
        MBV3Space.from_dict({"width": 1.0})


def test_count_matches_enumeration_on_a_tiny_space():
    tiny = MBV3Space(
        kernel_sizes=(3, 5),
        expand_ratios=(3, 4),
        depths=(1, 2),
        resolutions=(32, 64),
        stage_widths=(8, 16),
        stage_strides=(2, 2),
        stage_activations=("relu", "hswish"),
        stage_use_se=(False, True),
    )
    seen = set()
    for ks, e, d, r in itertools.product(
        itertools.product((3, 5), repeat=4),
        itertools.product((3, 4), repeat=4),
        itertools.product((1, 2), repeat=2),
        (32, 64),
    ):
        seen.add(tiny.validate(ArchConfig(ks, e, d, r)))
    assert tiny.count_subnets() == len(seen)
    assert tiny.count_subnets(with_resolution=False) == len(seen) // 2


def test_count_of_the_reference_space():
    assert W10.count_subnets(with_resolution=False) == (9**2 + 9**3 + 9**4) ** 5
    assert 2.1e19 < W10.count_subnets(with_resolution=False) < 2.3e19
    assert W10.count_subnets() == W10.count_subnets(with_resolution=False) * 25


def test_sampling_is_seeded_and_valid():
    a = [W10.sample(torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(0)
    samples = [W10.sample(g) for _ in range(200)]
    for s in samples:
        W10.validate(s)
    assert {k for s in samples for k in s.ks if k} == {3, 5, 7}
    assert {x for s in samples for x in s.d} == {2, 3, 4}
    assert len(set(samples)) == 200


def test_widths_of_the_reference_spaces():
    assert W10.widths == {
        "stem": 16,
        "first_block": 16,
        "stages": [24, 40, 80, 112, 160],
        "final_expand": 960,
        "feature_mix": 1280,
    }
    assert get_space("ofa_mbv3_w12").widths == {
        "stem": 24,
        "first_block": 24,
        "stages": [32, 48, 96, 136, 192],
        "final_expand": 1152,
        "feature_mix": 1536,
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stage_strides": (3, 2, 2, 1, 2)}, "stage_strides[0] = 3 is not allowed; allowed: 1, 2"),
        ({"kernel_sizes": (3, 4)}, "must be odd"),
        ({"stage_activations": ("relu",) * 4 + ("gelu",)}, "stage_activations[4] = 'gelu' is not allowed"),
        ({"stage_use_se": (True,)}, "stage_use_se has 1 values; stage_widths has 5 stages"),
        ({"depths": ()}, "depths is empty"),
    ],
)
def test_bad_space_raises_clear_value_error(fields, message):
    with pytest.raises(ValueError) as err:
        MBV3Space(**fields)
    assert message in str(err.value)


def test_unknown_space_name():
    with pytest.raises(ValueError, match="unknown space 'nope'; known: mnist, ofa_mbv3_cifar"):
        get_space("nope")
