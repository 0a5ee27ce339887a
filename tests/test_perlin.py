import math

import numpy as np
import pytest

from synth import perlin_mask, perlin_noise


def direct_perlin(shape, res, rng):
    """Per-pixel textbook Perlin noise: lerp of the four corner gradient dot products."""
    height, width = shape
    ry, rx = res
    angles = 2 * math.pi * rng.random((ry + 1, rx + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    fade = lambda t: 6 * t**5 - 15 * t**4 + 10 * t**3  # noqa: E731
    out = np.zeros(shape)
    for h in range(height):
        u = h * ry / height
        i, fy = int(u), u - int(u)
        for w in range(width):
            v = w * rx / width
            j, fx = int(v), v - int(v)
            dot = lambda a, b: gy[i + a, j + b] * (fy - a) + gx[i + a, j + b] * (fx - b)  # noqa: E731
            ty, tx = fade(fy), fade(fx)
            top = dot(0, 0) + ty * (dot(1, 0) - dot(0, 0))
            bottom = dot(0, 1) + ty * (dot(1, 1) - dot(0, 1))
            out[h, w] = math.sqrt(2) * (top + tx * (bottom - top))
    return out


@pytest.mark.parametrize("shape,res", [((32, 32), (4, 4)), ((37, 53), (4, 8)), ((20, 90), (1, 32))])
def test_fast_perlin_equals_the_direct_formula(shape, res):
    fast = perlin_noise(shape, res, np.random.default_rng(3))
    slow = direct_perlin(shape, res, np.random.default_rng(3))
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_perlin_noise_is_zero_on_lattice_points_and_bounded():
    noise = perlin_noise((64, 64), (4, 4), np.random.default_rng(0))
    assert np.allclose(noise[::16, ::16], 0, atol=1e-6)
    assert np.abs(noise).max() <= 1.0 + 1e-5


def test_perlin_mask_for_odd_sizes_and_scale_range():
    rng = np.random.default_rng(0)
    scales = set()
    for _ in range(60):
        mask, params = perlin_mask((77, 201), rng)
        assert mask.shape == (77, 201) and mask.dtype == bool
        scales.update(params["scale"])
    assert scales <= {1, 2, 4, 8, 16, 32} and len(scales) >= 5
