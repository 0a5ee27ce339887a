"""The realism measure: a classifier two-sample test on backbone features of defect windows."""

import numpy as np
import pytest
from conftest import smooth, with_defect

from curate.realism import defect_windows, realism_table, two_sample_auroc, window_features


def test_the_two_sample_auroc_is_near_half_for_one_distribution_and_near_one_for_two():
    rng = np.random.default_rng(0)
    same = two_sample_auroc(rng.normal(size=(60, 8)), rng.normal(size=(40, 8)))
    apart = two_sample_auroc(rng.normal(size=(60, 8)) + 1.5, rng.normal(size=(40, 8)))
    assert abs(same - 0.5) < 0.15 and apart > 0.95
    with pytest.raises(ValueError, match="at least 2 windows of each kind"):
        two_sample_auroc(rng.normal(size=(5, 8)), rng.normal(size=(1, 8)))


def test_windows_surround_each_defect_and_their_features_tell_defects_from_plain_windows():
    pairs = [with_defect(smooth(s, 96), s) for s in range(12)]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    windows = defect_windows(images + [smooth(50, 96)], masks + [np.zeros((96, 96))], size=64)
    assert len(windows) == 12 and all(w.shape == (64, 64, 3) for w in windows)  # the empty mask is skipped
    # the defect sits in the window's middle: its dark pixels are there
    assert np.mean([w[16:48, 16:48].mean() < w.mean() for w in windows]) > 0.8
    plain = [smooth(100 + s, 96)[16:80, 16:80] for s in range(12)]
    features = window_features(windows + plain, batch_size=8)
    assert features.shape[0] == 24 and np.isfinite(features).all()
    assert two_sample_auroc(features[:12], features[12:], folds=4) > 0.8


def test_the_realism_table_scores_each_generator_against_the_same_real_defects():
    pairs = [with_defect(smooth(s, 96), s) for s in range(24)]
    real = ([p[0] for p in pairs[:8]], [p[1] for p in pairs[:8]])
    like_real = ([p[0] for p in pairs[8:]], [p[1] for p in pairs[8:]])
    bright = [np.clip(image.astype(np.int16) + (mask[..., None] > 0) * 120, 0, 255).astype(np.uint8) if image.ndim == 3
              else np.clip(image.astype(np.int16) + (mask > 0) * 120, 0, 255).astype(np.uint8) for image, mask in zip(*like_real)]
    table = realism_table(*real, {"same": like_real, "bright": (bright, like_real[1]), "one": (like_real[0][:1], like_real[1][:1])})
    assert list(table) == ["same", "bright", "one"]
    assert table["one"] is None  # fewer than two windows: no test
    assert table["bright"] > table["same"] and table["bright"] > 0.9
    with pytest.raises(ValueError, match="at least 2 real defects"):
        realism_table(real[0][:1], real[1][:1], {"same": like_real})


def test_the_report_says_the_diffusion_models_figure_is_against_its_own_training_defects():
    from anomalyforge.run_report import _realism_section

    classical = {"n_shots": 6, "samples": {"cutpaste": 60, "nsa": 60}, "two_sample_auroc": {"cutpaste": 0.7, "nsa": 0.9}}
    with_model = {"n_shots": 6, "samples": {"cutpaste": 60, "diffusion": 60}, "two_sample_auroc": {"cutpaste": 0.7, "diffusion": 0.6}}
    assert "flatters" not in "".join(_realism_section(classical))
    page = "".join(_realism_section(with_model))
    assert "learned from these same defects" in page and "0.600" in page
