from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ofa.space import SPACES, ArchConfig
from search.genes import MBV3Genes, NB201Genes, as_gene_space
from search.refine import row_key

W10 = SPACES["ofa_mbv3_w10"]


@pytest.mark.parametrize("name", ["ofa_mbv3_w10", "ofa_mbv3_mnist"])
def test_mbv3_genes_round_trip(name):
    space = SPACES[name]
    genes = MBV3Genes(space)
    assert genes.n_genes == 2 * space.n_slots + space.n_stages + 1
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        arch = space.sample(g)
        row = genes.encode(arch)
        assert genes.decode(row) == arch
        assert genes.key(genes.decode(row)) == arch.key()
        assert genes.parse(arch.key()) == arch
        # Optuna parameters round trip too
        assert np.array_equal(genes.row_from_params(genes.params(row)), row)
    rng = np.random.default_rng(0)
    for row in rng.integers(0, genes.cardinalities, size=(200, genes.n_genes)):
        arch = space.validate(genes.decode(row))
        assert np.array_equal(genes.encode(arch), genes.canonical(row[None])[0])


def test_mbv3_canonical_rows_merge_skipped_slot_variants():
    genes = MBV3Genes(W10)
    a = ArchConfig(ks=[7, 5, 3, 7] * 5, e=[6, 4, 3, 6] * 5, d=[2] * 5, r=160)
    ra = genes.encode(a)
    variant = ra.copy()
    variant[2] = 2  # ks of the third slot of stage 0: skipped at depth 2
    variant[W10.n_slots + 3] = 1  # e of the fourth slot: skipped too
    assert not np.array_equal(variant, ra)
    assert genes.decode(variant) == a
    assert np.array_equal(genes.canonical(variant[None])[0], ra)
    deeper = ra.copy()
    deeper[2 * W10.n_slots] = W10.depths.index(3)  # stage 0 now runs slot 2: a different arch
    assert genes.decode(deeper) != a


def test_mbv3_neighbours_are_distinct_canonical_and_one_change_away():
    genes = MBV3Genes(SPACES["ofa_mbv3_mnist"])
    arch = SPACES["ofa_mbv3_mnist"].sample(torch.Generator().manual_seed(1))
    row = genes.encode(arch)
    nbrs = genes.neighbours(row)
    keys = {row_key(n) for n in nbrs}
    assert len(keys) == len(nbrs) and row_key(row) not in keys
    assert np.array_equal(genes.canonical(nbrs), nbrs)
    archs = [genes.decode(n) for n in nbrs]
    assert len(set(archs)) == len(archs) and arch not in archs


def test_as_gene_space_wraps_mbv3_space_and_refuses_other_things():
    assert isinstance(as_gene_space(W10), MBV3Genes)
    assert as_gene_space(W10).fingerprint() == W10.fingerprint()
    with pytest.raises(ValueError, match="GeneSpace or an ofa.space.MBV3Space"):
        as_gene_space("nb201")


def test_nb201_cells_round_trip_on_the_shared_table(shared_data):
    genes = NB201Genes()
    with open(shared_data / "nb201_accuracy_latency.csv", newline="") as f:
        cells = [row["arch"] for row in csv.DictReader(f)]
    rows = np.stack([genes.encode(c) for c in cells])
    assert len({row_key(r) for r in rows}) == len(cells) == genes.n_configs() == 15625
    for c, r in zip(cells[:500], rows[:500]):
        assert genes.decode(r) == c
        assert genes.key(c) == c
    assert len(genes.neighbours(rows[0])) == 6 * 4


@pytest.mark.parametrize(
    "bad, message",
    [
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "operation 'conv'"),
        ("|none~0|+|none~0|none~1|", "not a NAS-Bench-201 cell string"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "not a NAS-Bench-201 cell string"),
    ],
)
def test_nb201_bad_cells_are_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        NB201Genes().encode(bad)


def test_bad_parameter_value_is_named():
    genes = MBV3Genes(W10)
    params = genes.params(genes.encode(W10.largest()))
    params["ks0"] = 9
    with pytest.raises(ValueError, match="ks0 = 9 is not allowed; allowed: 3, 5, 7"):
        genes.row_from_params(params)
