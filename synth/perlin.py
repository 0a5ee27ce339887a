"""Perlin noise for any image size, and the thresholded Perlin masks DRAEM draws anomalies in."""

from __future__ import annotations

import math

import cv2
import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _corner_weights(n: int, periods: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel weights of the two lattice corners along one axis: (fade * offset, fade)."""
    u = np.arange(n, dtype=np.float64) * (periods / n)
    i = u.astype(np.int64)
    f = u - i
    t = _fade(f)
    rows = np.arange(n)
    with_offset = np.zeros((n, periods + 1), np.float32)
    plain = np.zeros((n, periods + 1), np.float32)
    with_offset[rows, i] = (1.0 - t) * f
    with_offset[rows, i + 1] = t * (f - 1.0)
    plain[rows, i] = 1.0 - t
    plain[rows, i + 1] = t
    return with_offset, plain


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise with ``res`` periods along (rows, columns), values in about [-1, 1].

    Cells may have a fractional size, so any ``shape`` works, not only multiples of ``res``. The
    bilinear blend of the four corner dot products factorises into two small matrix products per
    gradient component, which is exact and much faster than gathering per pixel.
    """
    height, width = shape
    ry, rx = res
    angles = (2.0 * math.pi) * rng.random((ry + 1, rx + 1))
    gy, gx = np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)
    y_offset, y_plain = _corner_weights(height, ry)
    x_offset, x_plain = _corner_weights(width, rx)
    noise = y_offset @ gy @ x_plain.T + y_plain @ gx @ x_offset.T
    return (math.sqrt(2.0) * noise).astype(np.float32)


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    """Rotate about the image centre, keeping the size; uncovered corners become 0."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    scale_exponents: tuple[int, int] = (0, 5),
    rotation: tuple[float, float] = (-90.0, 90.0),
    threshold: float = 0.5,
) -> tuple[np.ndarray, dict]:
    """DRAEM's anomaly mask: Perlin noise with 2^k periods per axis, rotated, thresholded."""
    sy = 2 ** int(rng.integers(scale_exponents[0], scale_exponents[1] + 1))
    sx = 2 ** int(rng.integers(scale_exponents[0], scale_exponents[1] + 1))
    angle = float(rng.uniform(*rotation))
    noise = rotate(perlin_noise(shape, (sy, sx), rng), angle)
    return noise > threshold, {"scale": [sy, sx], "angle": angle}
