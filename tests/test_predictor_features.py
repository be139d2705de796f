from __future__ import annotations

import numpy as np
import pytest
import torch

from ofa.networks import count_macs, count_params, layer_costs
from ofa.space import ArchConfig, get_space
from predictors import features as F


def sample(space, n: int, seed: int = 0) -> list[ArchConfig]:
    g = torch.Generator().manual_seed(seed)
    return [space.sample(g) for _ in range(n)] + [space.smallest(), space.largest()]


@pytest.mark.parametrize("name", ["ofa_mbv3_w10", "ofa_mbv3_mnist", "ofa_mbv3_cifar"])
def test_cost_tables_agree_with_layer_costs(name):
    space = get_space(name)
    archs = sample(space, 60)
    arrays = F.to_arrays(archs, space)
    assert F.total_macs(arrays, space).tolist() == [count_macs(space, a) for a in archs]
    assert F.total_params(arrays, space).tolist() == [count_params(space, a) for a in archs]
    # per-stage MACs of the analytic features sum the blocks of that stage as layer_costs lists them
    names = F.analytic_names(space)
    X = F.analytic_features(arrays, space)
    for i, arch in enumerate(archs[:10]):
        for stage in range(space.n_stages):
            want = sum(c.macs for c in layer_costs(space, arch) if c.stage == stage) / 1e6
            assert X[i, names.index(f"macs_s{stage}")] == pytest.approx(want, rel=1e-12)


def test_shape_ids_name_each_layer_shape():
    space = get_space("ofa_mbv3_mnist")
    t = F.cost_tables(space)
    for arch in sample(space, 20):
        arrays = F.to_arrays([arch], space)
        ids = F.block_lookup(arrays, space, t.shape_id + 1)[0] - 1
        fixed = t.fixed_shape_id[list(space.resolutions).index(arch.r)]
        shapes = [t.shapes[j] for j in ids[ids >= 0]]
        costs = layer_costs(space, arch)
        blocks = [c.shape for c in costs if c.name.startswith("block")]
        assert shapes == blocks
        assert sorted(t.shapes[j] for j in fixed) == sorted(c.shape for c in costs if not c.name.startswith("block"))


def test_onehot_is_ofa_encoding_and_decodes_back():
    space = get_space("ofa_mbv3_w10")
    archs = sample(space, 30)
    X = F.onehot_features(F.to_arrays(archs, space), space)
    n_k, n_e = len(space.kernel_sizes), len(space.expand_ratios)
    per_slot = X[:, : space.n_slots * (n_k + n_e)].reshape(len(archs), space.n_slots, n_k + n_e)
    r_hot = X[:, space.n_slots * (n_k + n_e) :]
    assert set(np.unique(X)) <= {0.0, 1.0}
    for arch, slots, rh in zip(archs, per_slot, r_hot):
        assert space.resolutions[int(rh.argmax())] == arch.r and rh.sum() == 1
        for j, slot in enumerate(slots):
            if arch.ks[j] == 0:  # skipped: all zeros
                assert not slot.any()
            else:
                assert slot[:n_k].sum() == 1 and slot[n_k:].sum() == 1
                assert space.kernel_sizes[int(slot[:n_k].argmax())] == arch.ks[j]
                assert space.expand_ratios[int(slot[n_k:].argmax())] == arch.e[j]


def test_encode_refuses_configs_of_another_space_in_one_line():
    mnist, w10 = get_space("ofa_mbv3_mnist"), get_space("ofa_mbv3_w10")
    archs = sample(mnist, 3) + [w10.smallest()]
    with pytest.raises(ValueError) as err:
        F.to_arrays(archs, mnist)
    assert str(err.value) == "r = 128 is not allowed; allowed: 20, 24, 28"
    with pytest.raises(ValueError, match="not an ArchConfig"):
        F.to_arrays([{"ks": 3}], mnist)
    with pytest.raises(ValueError, match="feature_set = 'nope' is not allowed"):
        F.encode(F.to_arrays(archs[:1], mnist), mnist, "nope")


def test_encoding_is_vectorised_over_a_large_batch():
    space = get_space("ofa_mbv3_w10")
    archs = sample(space, 2000, seed=1)
    arrays = F.to_arrays(archs, space)
    X = F.encode(arrays, space)
    assert X.shape == (
        len(archs),
        len(F.onehot_features(arrays.take(np.arange(1)), space)[0]) + len(F.analytic_names(space)),
    )
    assert X.dtype == np.float64 and np.isfinite(X).all()
    # encoding a subset equals the subset of the encoding (no cross-row state)
    rows = np.array([5, 17, 1999])
    assert np.array_equal(F.encode(arrays.take(rows), space), X[rows])
