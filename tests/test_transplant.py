"""The defect transplant: real defects moved onto normal images with exact masks, seamlessly."""

import json

import cv2
import numpy as np
import pytest
from conftest import smooth

from synth import DefectShot, DefectTransplant
from synth.transplant import poisson_blend


def grey_smooth(seed: int, size: int = 96) -> np.ndarray:
    return np.repeat(smooth(seed, size).mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)


def dark_spot_shot(seed: int = 0, size: int = 96, defect: str = "spot", box=(30, 50, 20, 34), depth: int = 70) -> DefectShot:
    image = grey_smooth(100 + seed, size)
    mask = np.zeros((size, size), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 1
    image[mask > 0] = np.clip(image[mask > 0].astype(int) - depth, 0, 255).astype(np.uint8)
    return DefectShot(image, mask, defect)


FIXED = dict(scale=(1.0, 1.0), rotation=(0.0, 0.0), flip=False, contrast=(1.0, 1.0))


def depth_of(sample, before: np.ndarray) -> float:
    """How much darker the masked pixels became."""
    mask = sample.mask > 0
    return float(before[mask].astype(int).mean() - sample.image[mask].astype(int).mean())


def shot_depth(shot: DefectShot) -> float:
    """How much darker the shot's defect is than the pixels around it."""
    mask = shot.mask > 0
    around = (cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~mask
    return float(shot.image[around].astype(int).mean() - shot.image[mask].astype(int).mean())


def test_the_defect_keeps_its_shape_and_depth_at_a_new_place_and_only_its_ring_changes():
    image, mask = np.full((96, 96, 3), 130, np.uint8), np.zeros((96, 96), np.uint8)
    mask[30:50, 20:34] = 1
    image[30:50, 20:34] = 60
    flat = DefectShot(image, mask, "spot")
    for shot, target in ((flat, lambda seed: np.full((96, 96, 3), 150 + seed, np.uint8)), (dark_spot_shot(), grey_smooth)):
        check_transplants(shot, target)


def check_transplants(shot: DefectShot, target) -> None:
    generator = DefectTransplant([shot], margin=0.0, min_margin=3, **FIXED)
    flat = shot.image.std() < 20
    places = set()
    for seed in range(6):
        image = target(seed)
        sample = generator(image, np.random.default_rng(seed))
        mask = sample.mask > 0
        assert sample.label == 1 and mask.sum() == 20 * 14  # the shot's own pixels, exactly
        ys, xs = np.nonzero(mask)
        assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (20, 14)
        places.add((int(ys.min()), int(xs.min())))
        if flat:  # on flat images the blend keeps the step exactly: the shot's contrast, moved
            assert depth_of(sample, image) == pytest.approx(shot_depth(shot), abs=2)
        else:  # on shaded ones, the shading of both images adds to the step
            assert depth_of(sample, image) == pytest.approx(shot_depth(shot), rel=0.35)
        changed = np.abs(sample.image.astype(int) - image.astype(int)).max(axis=2) > 0
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        assert not (changed & ~ring).any()  # nothing changes beyond the blended ring
        json.dumps(sample.params)
    assert len(places) > 3  # new places, not the shot's


def test_contrast_and_scale_change_the_defect_as_drawn():
    shot = dark_spot_shot()
    image = grey_smooth(1)
    half = DefectTransplant([shot], **{**FIXED, "contrast": (0.5, 0.5)})(image, np.random.default_rng(0))
    full = DefectTransplant([shot], **FIXED)(image, np.random.default_rng(0))
    assert depth_of(half, image) == pytest.approx(depth_of(full, image) / 2, rel=0.2)
    double = DefectTransplant([shot], **{**FIXED, "scale": (2.0, 2.0)})(image, np.random.default_rng(0))
    assert (double.mask > 0).sum() == pytest.approx(4 * 20 * 14, rel=0.1)
    turned = DefectTransplant([shot], **{**FIXED, "rotation": (90.0, 90.0)})(image, np.random.default_rng(0))
    ys, xs = np.nonzero(turned.mask > 0)
    assert abs((ys.max() - ys.min() + 1) - 14) <= 2 and abs((xs.max() - xs.min() + 1) - 20) <= 2


def test_types_are_drawn_evenly_and_one_type_can_be_chosen():
    shots = [dark_spot_shot(0, defect="spot"), dark_spot_shot(1, defect="spot"), dark_spot_shot(2, defect="scratch", box=(10, 14, 10, 60))]
    generator = DefectTransplant(shots)
    drawn = [generator(grey_smooth(s), np.random.default_rng(s)).params["defect"] for s in range(40)]
    assert 10 <= drawn.count("scratch") <= 30  # one shot of two, yet half the samples
    only = DefectTransplant(shots, defect="scratch")
    assert {only(grey_smooth(s), np.random.default_rng(s)).params["defect"] for s in range(5)} == {"scratch"}
    assert generator.get_config()["shots"] == {"spot": 2, "scratch": 1}


def test_same_seed_same_bytes_and_a_grey_image_stays_grey():
    generator = DefectTransplant([dark_spot_shot()])
    image = grey_smooth(3)
    a, b, c = (generator(image, np.random.default_rng(s)) for s in (7, 7, 8))
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes() and a.params == b.params
    assert a.image.tobytes() != c.image.tobytes()
    assert np.array_equal(a.image[..., 0], a.image[..., 1]) and np.array_equal(a.image[..., 1], a.image[..., 2])


def test_with_a_background_the_defect_lands_on_the_object():
    image = np.zeros((96, 96, 3), np.uint8)
    image[20:80, 30:70] = grey_smooth(0)[20:80, 30:70]
    generator = DefectTransplant([dark_spot_shot(box=(40, 48, 40, 48), depth=40)], background=0, background_threshold=5)
    for seed in range(8):
        sample = generator(image, np.random.default_rng(seed))
        ys, xs = np.nonzero(sample.mask > 0)
        assert ys.min() >= 20 and ys.max() < 80 and xs.min() >= 30 and xs.max() < 70


def test_bad_settings_and_missing_shots_are_clear_errors():
    with pytest.raises(ValueError, match="scale must be"):
        DefectTransplant(scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="contrast must be"):
        DefectTransplant(contrast=(0.0, 1.0))
    with pytest.raises(ValueError, match="'dent' is not among the shots' types"):
        DefectTransplant([dark_spot_shot()], defect="dent")
    with pytest.raises(ValueError, match="blend must be"):
        DefectTransplant(blend="soft")
    with pytest.raises(ValueError, match="needs shots"):
        DefectTransplant()(grey_smooth(0), np.random.default_rng(0))


def test_poisson_blend_keeps_every_source_pixel_where_it_was():
    """cv2.seamlessClone centres the pasted box itself; the blend must not shift the defect by a pixel."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(8, 30, 2))
        y, x = int(rng.integers(1, 64 - h - 1)), int(rng.integers(1, 80 - w - 1))
        target = np.full((64, 80, 3), 128, np.uint8)
        source = target.copy()
        region = np.zeros((64, 80), bool)
        region[y : y + h, x : x + w] = True
        dot = (y + int(rng.integers(3, h - 3)), x + int(rng.integers(3, w - 3)))
        source[dot] = 0
        out = poisson_blend(source, target, region)
        assert np.unravel_index(np.argmin(out[..., 0]), out.shape[:2]) == dot
        assert (out[~region] == 128).all()


def test_shots_are_dealt_into_halves_across_types():
    from synth.shots import shot_halves

    image, mask = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8)
    shots = [DefectShot(image, mask, defect, f"{defect}{i}") for defect in ("crack", "hole") for i in range(3)]
    halves = shot_halves(shots[::-1])  # types keep their first-seen order, shots their order within a type
    assert [[s.source for s in half] for half in halves] == [["hole2", "hole0", "crack1"], ["hole1", "crack2", "crack0"]]
    one_per_type = shot_halves([shots[0], shots[3]])
    assert [[s.source for s in half] for half in one_per_type] == [["crack0"], ["hole0"]]
    assert [[s.source for s in half] for half in shot_halves(shots[:1])] == [["crack0"]]
    assert shot_halves([]) == []
