"""Shared converter pieces: the seeded split and the cap."""

from __future__ import annotations

import pytest
from fedgin.tools.data.datasets.common import Case, DatasetError, Options, make_splits


def cases(n, prefix=""):
    return [Case(f"{prefix}{i}", None, None) for i in range(n)]


def ids(splits):
    return {s: [c.case_id for c in v] for s, v in splits.items()}


def test_seeded_split_fractions_counts_and_own_splits():
    a = ids(make_splits({"training": cases(20)}, Options(val=0.1, test=0.2, seed=4)))
    assert [len(a[s]) for s in ("training", "validation", "test")] == [14, 2, 4]
    assert a == ids(make_splits({"training": cases(20)}, Options(val=0.1, test=0.2, seed=4)))
    assert a != ids(make_splits({"training": cases(20)}, Options(val=0.1, test=0.2, seed=5)))
    assert sorted(sum(a.values(), []), key=int) == [str(i) for i in range(20)]  # a partition
    b = ids(make_splits({"training": cases(10), "validation": cases(3, "v")}, Options(val=0.5, test=2)))
    assert b["validation"] == ["v0", "v1", "v2"] and len(b["test"]) == 2 and len(b["training"]) == 8
    assert len(ids(make_splits({"training": cases(4)}, Options(val=0.1, test=0.1)))["training"]) == 2


def test_cap_is_a_seeded_nested_subset():
    pools = {"training": cases(30), "validation": cases(4, "v")}
    big = ids(make_splits(pools, Options(max_cases=5)))
    small = ids(make_splits(pools, Options(max_cases=3)))
    assert all(len(v) <= 5 for v in big.values()) and len(small["training"]) == 3
    assert all(set(small[s]) <= set(big[s]) for s in big)


def test_no_training_left_is_an_error():
    with pytest.raises(DatasetError, match="no training cases left: 2 labelled cases"):
        make_splits({"training": cases(2)}, Options(val=1, test=1))
    with pytest.raises(DatasetError, match="unknown task 'brain'"):
        Options(task="brain")
