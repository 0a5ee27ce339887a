import cv2
import numpy as np
import pytest
from conftest import textured
from PIL import Image

from synth import ImageReadError, list_images, mvtec_test_images, normal_image_paths, read_image, read_mask


def test_grey_rgba_16bit_and_palette_become_rgb8(tmp_path):
    grey = textured(20, 30, grey=True)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb = textured(20, 30)
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    rgba[0, 0, 3] = 0  # one transparent pixel composites to black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    cv2.imwrite(str(tmp_path / "deep.png"), (grey.astype(np.uint16) * 257))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "palette.png")
    cv2.imwrite(str(tmp_path / "deep_rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)

    for name in ("grey", "rgba", "deep", "palette", "deep_rgb"):
        out = read_image(tmp_path / f"{name}.png")
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8, name
    assert np.array_equal(read_image(tmp_path / "grey.png")[..., 1], grey)
    assert np.array_equal(read_image(tmp_path / "deep.png")[..., 0], grey)
    assert np.array_equal(read_image(tmp_path / "deep_rgb.png"), rgb)
    got = read_image(tmp_path / "rgba.png")
    assert (got[0, 0] == 0).all() and np.array_equal(got[1:], rgb[1:])
    palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "palette.png"), palette)


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG garbage")
    for name, problem in [("empty.png", "empty"), ("junk.png", "not a readable image"), ("missing.png", "cannot open")]:
        with pytest.raises(ImageReadError, match=problem) as info:
            read_image(tmp_path / name)
        assert name in str(info.value)


def test_folder_errors_and_listing(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.PNG", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path / "imgs")] == ["a.jpg", "b.png", "c.PNG"]


def test_mvtec_layout(tmp_path):
    root = tmp_path / "cat"
    for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / folder).mkdir(parents=True)
    image = textured(16, 24)
    for path in ("train/good/000.png", "train/good/001.png", "test/good/000.png", "test/crack/000.png"):
        cv2.imwrite(str(root / path), image)
    mask = np.zeros((16, 24), np.uint8)
    mask[4:8, 5:9] = 255
    cv2.imwrite(str(root / "ground_truth/crack/000_mask.png"), mask)
    assert [p.name for p in normal_image_paths(root)] == ["000.png", "001.png"]
    tests = mvtec_test_images(root)
    assert [(t.defect, t.label) for t in tests] == [("crack", 1), ("good", 0)]
    loaded = read_mask(tests[0].mask_path)
    assert loaded.dtype == np.float32 and loaded.sum() == 16 and loaded.max() == 1.0
    (root / "ground_truth/crack/000_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="mask"):
        mvtec_test_images(root)
