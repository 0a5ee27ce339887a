import numpy as np
import pytest

from detectors.base import Prediction
from detectors.data import TestSet
from detectors.evaluation import check_test_set, metrics_for, overlay_choice
from synth.common.pictures import colour_bar, mask_overlay


def _test_set(labels, has_mask=None, size=16):
    n = len(labels)
    masks = []
    for label in labels:
        mask = np.zeros((size, size), np.float32)
        if label:
            mask[4:8, 4:8] = 1
        masks.append(mask)
    images = [np.zeros((size, size, 3), np.uint8)] * n
    defects = ["dent" if label else "good" for label in labels]
    return TestSet(images, masks, np.array(labels), defects, [f"{k}.png" for k in range(n)], {},
                   None if has_mask is None else np.array(has_mask))


def test_overlays_show_the_likeliest_errors_first():
    labels = [0] * 6 + [1] * 6
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.35, 0.6, 0.7, 0.8, 0.95, 0.99])
    chosen = overlay_choice(Prediction(scores, None), _test_set(labels), 8)
    assert chosen[:2] == [(6, "lowest-scored"), (7, "lowest-scored")]  # the defects a threshold misses first
    assert chosen[2:4] == [(5, "highest-scored"), (4, "highest-scored")]  # the good images it rejects first
    assert {i for i, _ in chosen[4:6]} == {11, 10} and {i for i, _ in chosen[6:]} == {0, 1}
    assert len({i for i, _ in overlay_choice(Prediction(scores, None), _test_set(labels), 40)}) == 12  # each image once


def test_outline_overlay_leaves_the_defect_visible_and_the_colour_bar_runs_blue_to_red():
    image = np.full((20, 20, 3), 100, np.uint8)
    mask = np.zeros((20, 20), np.float32)
    mask[5:15, 5:15] = 1
    assert np.array_equal(mask_overlay(image, mask, fill=False)[10, 10], image[10, 10])
    assert not np.array_equal(mask_overlay(image, mask)[10, 10], image[10, 10])
    assert not np.array_equal(mask_overlay(image, mask, fill=False)[5, 5], image[5, 5])  # the outline
    bar = colour_bar(300, 0.5, 2.0)
    left, right = bar[10, 6].astype(int), bar[10, 292].astype(int)
    assert left[2] > left[0] and right[0] > right[2]


def test_pixel_metrics_only_where_masks_exist():
    labels = [0, 0, 0, 1, 1, 1]
    test = _test_set(labels, has_mask=[True, True, True, True, True, False])
    maps = np.zeros((6, 16, 16), np.float32)
    maps[3:, 4:8, 4:8] = 1.0
    maps[5] = 5.0  # an unmasked defect image: its map must not count against the pixel metrics
    metrics = metrics_for(Prediction(np.arange(6.0), maps), test)
    assert metrics["pixel_auroc"] == 1.0 and metrics["n_defects_with_mask"] == 2 and metrics["image_auroc"] == 1.0
    none = metrics_for(Prediction(np.arange(6.0), maps), _test_set(labels, has_mask=[True] * 3 + [False] * 3))
    assert none["pixel_auroc"] is None and none["image_auroc"] == 1.0


def test_pixel_auroc_per_defect_type_tells_which_kind_the_maps_miss():
    labels = [0, 0, 1, 1, 1, 1]
    test = _test_set(labels)
    test.defects = ["good", "good", "dent", "dent", "crack", "crack"]
    maps = np.zeros((6, 16, 16), np.float32)
    maps[:, 0:2, 0:2] = 0.5  # a bright corner on every image
    maps[2:4, 4:8, 4:8] = 1.0  # the dents are found; the cracks' maps are flat
    metrics = metrics_for(Prediction(np.arange(6.0), maps), test)
    assert metrics["pixel_auroc_per_defect"]["dent"] == 1.0
    assert metrics["pixel_auroc_per_defect"]["crack"] < 0.6
    assert set(metrics["pixel_auroc_per_defect"]) == {"dent", "crack"}


def test_a_split_without_defects_says_what_is_missing():
    with pytest.raises(ValueError, match="only good images .* defect images as well"):
        check_test_set(_test_set([0, 0, 0]))
    with pytest.raises(ValueError, match="only defect images .* a test/good/ folder"):
        check_test_set(_test_set([1, 1]))


def test_sheet_captions_read_as_words():
    from detectors.evaluation import _share_of_good

    assert _share_of_good(6, 6) == "above every good image"
    assert _share_of_good(0, 6) == "below every good image"
    assert _share_of_good(5, 6) == "above 83% of good images"
    assert _share_of_good(0, 0) == "no good images to compare"
