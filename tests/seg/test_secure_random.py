"""Secure mode's draws: from the operating system's CSPRNG, with the stated distributions."""

import math

import numpy as np
import pytest
from fedgin.seg.secure_random import secure_normal, secure_uniform


def test_uniforms_are_in_the_open_unit_interval_and_uniform():
    u = secure_uniform((400, 500))
    assert u.shape == (400, 500) and u.dtype == np.float64
    assert 0 < u.min() and u.max() < 1
    # 200k draws: mean 0.5 +- 0.0006 (1 sigma), variance 1/12; a decile holds 10 % +- 0.07 %.
    assert u.mean() == pytest.approx(0.5, abs=0.003)
    assert u.var() == pytest.approx(1 / 12, rel=0.01)
    assert np.histogram(u, bins=10, range=(0, 1))[0] / u.size == pytest.approx([0.1] * 10, abs=0.003)


def test_normals_have_the_stated_std_and_are_never_repeated():
    std = 0.7
    z = secure_normal((200_000,), std)
    assert abs(z.mean()) < 5 * std / math.sqrt(z.size)
    assert z.std() == pytest.approx(std, rel=0.01)
    # Gaussian tails: about 4.55 % beyond 2 std.
    assert np.mean(np.abs(z) > 2 * std) == pytest.approx(0.0455, abs=0.003)
    assert not np.array_equal(secure_normal((10,), 1.0), secure_normal((10,), 1.0))
    assert np.array_equal(secure_normal((3, 2), 0.0), np.zeros((3, 2)))
