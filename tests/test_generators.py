import json

import numpy as np
import pytest
from conftest import textured

from synth import DRAEM, NSA, CutPaste, Mix, object_mask


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    diff = np.abs(before.astype(int) - after.astype(int))
    return diff.reshape(diff.shape[0], diff.shape[1], -1).max(axis=-1) > 0


def sources(n=3, shape=(96, 128)):
    return [textured(*shape, seed=10 + k) for k in range(n)]


GENERATORS = {
    "cutpaste-normal": lambda: CutPaste("normal"),
    "cutpaste-scar": lambda: CutPaste("scar"),
    "nsa-binary": lambda: NSA(sources(), preset="texture", label_mode="binary"),
    "nsa-object": lambda: NSA(sources(), preset="object", label_mode="binary", background=0, background_threshold=5),
    # a faint texture (small opacity) legitimately leaves masked pixels unchanged; keep it visible here
    "draem": lambda: DRAEM(opacity=(0.5, 1.0)),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("shape,grey", [((96, 128), False), ((61, 203), False), ((130, 47), True)])
def test_mask_covers_exactly_the_changed_pixels(name, shape, grey):
    generator = GENERATORS[name]()
    for seed in range(6):
        image = textured(*shape, seed=seed, grey=grey)
        sample = generator(image, np.random.default_rng(seed))
        assert sample.image.shape == image.shape and sample.image.dtype == np.uint8
        assert sample.mask.shape == shape and sample.mask.dtype == np.float32
        assert sample.label == 1 and sample.mask.max() == 1.0
        assert set(np.unique(sample.mask)) <= {0.0, 1.0}
        diff = changed(image, sample.image)
        mask = sample.mask > 0
        # nothing changes outside the mask
        assert not (diff & ~mask).any(), f"{name}: {int((diff & ~mask).sum())} changed pixels outside the mask"
        # and the mask is (nearly) all changed pixels: NSA's mask is median-filtered and a blend may
        # round back to the old grey value, so allow a little
        assert (diff & mask).sum() >= (0.97 if name.startswith("cutpaste") else 0.9) * mask.sum() - 1  # a pixel may match by chance
        json.dumps(sample.params)  # parameters are JSON-serialisable


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_grey_image_stored_as_colour_gets_a_grey_anomaly(name):
    """A grey part photographed into an RGB file must not receive a coloured defect (a shortcut a
    detector would learn instead of the defect)."""
    generator = GENERATORS[name]()
    for seed in range(4):
        image = np.repeat(textured(96, 128, seed=seed, grey=True)[..., None], 3, axis=2)
        sample = generator(image, np.random.default_rng(seed))
        assert sample.mask.max() == 1.0 and not np.array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.image[..., 0], sample.image[..., 1])
        np.testing.assert_array_equal(sample.image[..., 1], sample.image[..., 2])


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_bytes_and_different_seed_differs(name, image):
    a = GENERATORS[name]()(image, np.random.default_rng(7))
    b = GENERATORS[name]()(image, np.random.default_rng(7))
    c = GENERATORS[name]()(image, np.random.default_rng(8))
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.params == b.params
    assert a.image.tobytes() != c.image.tobytes()


def test_cutpaste_patch_area_and_aspect_on_non_square_images():
    """Width runs along columns: on a very wide and a very tall image the patch keeps the area ratio."""
    generator = CutPaste("normal")
    for shape in [(40, 400), (400, 40)]:
        image = textured(*shape)
        for seed in range(40):
            sample = generator(image, np.random.default_rng(seed))
            h, w = sample.params["size"]
            rows, cols = np.nonzero(sample.mask)
            assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (h, w)
            assert h < shape[0] and w < shape[1]
            area = h * w / (shape[0] * shape[1])
            assert 0.015 <= area <= 0.16, (shape, h, w)


def test_cutpaste_scar_size_and_rotation_follow_the_paper_at_256():
    generator = CutPaste("scar")
    image = textured(256, 256)
    for seed in range(20):
        sample = generator(image, np.random.default_rng(seed))
        h, w = sample.params["size"]
        assert 10 <= h <= 25 and 2 <= w <= 16
        assert -45 <= sample.params["angle"] <= 45
        # a rotated h x w rectangle covers about h * w pixels
        assert 0.6 * h * w <= sample.mask.sum() <= 1.6 * h * w + 4 * (h + w)


def test_cutpaste_3way_labels_and_union_variants():
    image = textured(64, 64)
    labels = {CutPaste("3way")(image, np.random.default_rng(s)).label for s in range(30)}
    assert labels == {0, 1, 2}
    variants = {CutPaste("union")(image, np.random.default_rng(s)).params["variant"] for s in range(30)}
    assert variants == {"normal", "scar"}


def test_p_unchanged_returns_the_image_with_an_empty_mask(image):
    generator = DRAEM(p_unchanged=1.0)
    sample = generator(image, np.random.default_rng(0))
    assert sample.label == 0 and not sample.mask.any() and np.array_equal(sample.image, image)
    half = [DRAEM(p_unchanged=0.5)(image, np.random.default_rng(s)).label for s in range(60)]
    assert 15 < sum(half) < 45


def test_nsa_patches_come_from_another_image_and_land_on_the_object():
    # dark background (value 0) with a bright textured disc in the middle
    def disc_image(seed):
        img = textured(128, 128, seed=seed)
        yy, xx = np.mgrid[0:128, 0:128]
        img[(yy - 64) ** 2 + (xx - 64) ** 2 > 40**2] = 0
        return img

    pool = [disc_image(s) for s in range(4)]
    generator = NSA(pool, preset="object", label_mode="binary", background=0, background_threshold=5)
    hits = 0
    for seed in range(12):
        image = pool[seed % 4]
        sample = generator(image, np.random.default_rng(seed))
        assert sample.params["source_index"] != seed % 4
        on_object = object_mask(image, 0, 5)
        assert not (changed(image, sample.image) & ~on_object).any()
        hits += sample.label
    assert hits >= 10


def test_nsa_soft_labels_lie_in_unit_interval(image):
    for mode in ("intensity", "logistic-intensity"):
        sample = NSA(sources(), preset="texture", label_mode=mode)(image, np.random.default_rng(3))
        assert 0.0 <= sample.mask.min() and sample.mask.max() <= 1.0 and sample.mask.max() > 0
        assert not (changed(image, sample.image) & (sample.mask == 0)).any() or mode == "intensity"


def test_draem_texture_folder_and_unreadable_texture(tmp_path, image):
    import cv2

    cv2.imwrite(str(tmp_path / "good.png"), textured(80, 80, seed=5))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    generator = DRAEM(texture_dir=tmp_path)
    for seed in range(8):
        sample = generator(image, np.random.default_rng(seed))
        assert sample.params["texture"] == "good.png"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DRAEM(texture_dir=tmp_path / "missing")(image, np.random.default_rng(0))


def test_draem_opacity_is_the_texture_weight(image):
    sample = DRAEM(opacity=(0.0, 0.0))(image, np.random.default_rng(1))
    assert sample.mask.any() and np.array_equal(sample.image, image)


def test_mix_respects_weights_and_keeps_generator_names(image):
    mix = Mix([CutPaste("normal"), DRAEM()], weights=[3, 1])
    names = [mix(image, np.random.default_rng(s)).generator for s in range(200)]
    assert set(names) == {"cutpaste", "draem"}
    assert 120 < names.count("cutpaste") < 180
    with pytest.raises(ValueError):
        Mix([CutPaste()], weights=[1, 2])


def test_bad_images_are_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        CutPaste()(np.zeros((32, 32, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        CutPaste()(np.zeros((32, 32, 4), np.uint8), np.random.default_rng(0))


def test_colour_jitter_draws_from_the_rng_and_keeps_its_bounds():
    from synth.colour_jitter import ColourJitter

    image = textured(24, 32, seed=4)
    out, drawn = ColourJitter(0.3, 0.3, 0.3, 0.1)(image, np.random.default_rng(5))
    again, drawn_again = ColourJitter(0.3, 0.3, 0.3, 0.1)(image, np.random.default_rng(5))
    assert np.array_equal(out, again) and drawn == drawn_again
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    assert sorted(drawn["order"]) == [0, 1, 2, 3]
    assert all(0.7 <= drawn[k] <= 1.3 for k in ("brightness", "contrast", "saturation")) and abs(drawn["hue"]) <= 0.1
    still, _ = ColourJitter(0, 0, 0, 0)(image, np.random.default_rng(5))
    assert np.array_equal(still, image)
    darker, _ = ColourJitter(0.5, 0, 0, 0)(image, np.random.default_rng(0))  # brightness factor drawn below 1
    factor = np.random.default_rng(0).uniform(0.5, 1.5)
    assert abs(darker.astype(float).mean() - factor * image.astype(float).mean()) < 2.0
    with pytest.raises(ValueError, match="hue jitter"):
        ColourJitter(hue=0.7)
