import numpy as np
import pytest

from detectors import DRAEM, PatchKNN, SizeRule
from detectors.data import load_normals, load_test_set
from detectors.sizing import Tiling, image_shapes, resize_mask_to, resize_to

from conftest import smooth, textured, with_defect, write_rgb


@pytest.mark.parametrize(
    "shapes,rule,expected",
    [
        ([(512, 512)] * 3, SizeRule(256), (256, 256)),  # squares stay square
        ([(500, 1250)] * 3, SizeRule(256), (256, 640)),  # a 1:2.5 strip keeps its aspect (KolektorSDD)
        ([(1250, 500)] * 3, SizeRule(256), (640, 256)),  # the same strip standing up
        ([(1024, 1024)] * 2, SizeRule(320), (320, 320)),
        ([(460, 1130)], SizeRule(256), (256, 624)),  # 2.457:1, long side rounded to the stride
        ([(100, 2000)], SizeRule(256, max_side=1024), (48, 1024)),  # the long side is capped
        ([(289, 103), (322, 195), (345, 379), (222, 580), (300, 250)], SizeRule(256), (304, 256)),  # median aspect
        ([(500, 1250)], SizeRule(256, aspect="square"), (256, 256)),
        ([(500, 1250)], SizeRule(100, stride=32), (96, 256)),
    ],
)
def test_shape_for(shapes, rule, expected):
    shape = rule.shape_for(shapes)
    assert shape == expected
    assert shape[0] % rule.stride == 0 and shape[1] % rule.stride == 0
    assert rule.shape_for([shape]) == shape  # resized images give the same shape again


def test_size_rule_rejects_bad_options():
    with pytest.raises(ValueError, match="image_size must be at least 16"):
        SizeRule(8)
    with pytest.raises(ValueError, match="max_side"):
        SizeRule(512, max_side=256)
    with pytest.raises(ValueError, match="at least one image shape"):
        SizeRule().shape_for([])


def test_resizing_helpers():
    image = smooth(0, 64)
    assert resize_to(image, (32, 80)).shape == (32, 80, 3)
    assert resize_to(image, (64, 64)) is image
    mask = np.zeros((64, 64), np.float32)
    mask[10:20, 10:20] = 1
    small = resize_mask_to(mask, (16, 32))
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1}


def test_loaders_keep_the_aspect_ratio(tmp_path):
    root = tmp_path / "strip"
    for i in range(3):
        write_rgb(root / "train" / "good" / f"{i}.png", np.concatenate([smooth(i), smooth(i + 10), smooth(i + 20)], 1)[:, :160])
    write_rgb(root / "test" / "good" / "0.png", np.concatenate([smooth(5), smooth(6), smooth(7)], 1)[:, :160])
    (root / "train" / "good" / "broken.png").write_bytes(b"not an image")
    assert image_shapes(sorted((root / "train" / "good").glob("[0-9].png"))) == [(64, 160)] * 3
    normals = load_normals(root, SizeRule(32))
    assert normals.shape == (32, 80) and all(i.shape == (32, 80, 3) for i in normals.images)
    assert any("broken.png" in path for path in normals.skipped)
    test = load_test_set(root, normals.shape)
    assert test.images[0].shape[:2] == test.masks[0].shape == (32, 80)


def test_detectors_work_at_a_non_square_input_shape():
    normals = [np.concatenate([smooth(i), smooth(i + 30)], 1) for i in range(6)]  # 64 x 128
    knn = PatchKNN(image_size=32, coreset_ratio=0.5).fit(normals, progress=False)
    assert knn.input_shape == (32, 64)
    prediction = knn.predict([smooth(99, 96)])  # another shape is resized to the detector's
    assert prediction.maps.shape == (1, 32, 64)
    square = PatchKNN(image_size=32, aspect="square", coreset_ratio=0.5).fit(normals, progress=False)
    assert square.input_shape == (32, 32)
    assert DRAEM(image_size=40, epochs=1, reconstructive_width=2, discriminative_width=2).size_rule.stride == 32


@pytest.mark.parametrize("length,size,overlap", [(1024, 512, 128), (1024, 256, 128), (640, 256, 64), (272, 256, 0), (4096, 384, 128)])
def test_tiling_windows_cover_the_input_and_overlap(length, size, overlap):
    starts = Tiling(size, overlap).starts(length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(start % 16 == 0 for start in starts)
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= size - overlap).all()  # every pair of neighbours shares at least `overlap`
    assert len(starts) == -(-(length - size) // (size - overlap)) + 1  # no more windows than needed


def test_tiling_options():
    assert Tiling(512).windows((256, 640)) == [(0, 0, 256, 512), (0, 128, 256, 512)]
    assert Tiling(None).windows((256, 640)) == Tiling(1024).windows((256, 640)) == [(0, 0, 256, 640)]
    for size, overlap in ((24, 0), (100, 16), (256, 24), (256, 256), (256, -16)):
        with pytest.raises(ValueError, match="tile_"):
            Tiling(size, overlap)
    with pytest.raises(ValueError, match="tile_overlap"):
        PatchKNN(tile_size=256, tile_overlap=300)


def test_tiled_features_follow_the_whole_input_while_the_backbone_sees_tiles_only():
    import torch

    from detectors.features import PatchFeatures

    images = torch.from_numpy(np.stack([textured(192, 320, seed) for seed in (0, 1)])).permute(0, 3, 1, 2).float()
    whole = PatchFeatures()
    tiled = PatchFeatures(tile_size=192, tile_overlap=128)
    seen = []
    tiled.backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        expected, got = whole(images), tiled(images)
    assert got.shape == expected.shape == (2, whole.channels, 24, 40)
    assert seen == [(192, 192)] * 3  # windows at 0, 64 and 128 px across, each 192 px square
    error = ((got - expected).norm(dim=1) / expected.norm(dim=1)).median()
    assert error < 0.05, error  # 0.011 measured; windows one cell out of place give 0.21
    with torch.no_grad():  # an input no larger than a tile goes through whole, unchanged
        assert torch.equal(PatchFeatures(tile_size=320)(images), expected)


def test_a_tiled_detector_finds_a_defect_saves_and_exports(tmp_path):
    import onnxruntime

    from detectors import load_detector
    from detectors.export import export_onnx

    normals = [np.concatenate([smooth(i), smooth(i + 30)], 1) for i in range(6)]  # 64 x 128
    knn = PatchKNN(image_size=64, coreset_ratio=0.5, tile_size=64, tile_overlap=32).fit(normals, progress=False)
    assert knn.input_shape == (64, 128) and knn.model_.features.tiling.windows((64, 128))[-1] == (0, 64, 64, 64)
    defect, mask = with_defect(np.concatenate([smooth(50), smooth(80)], 1), 2)
    prediction = knn.predict([defect, np.concatenate([smooth(51), smooth(81)], 1)])
    assert prediction.maps.shape == (2, 64, 128)
    assert prediction.maps[0][mask > 0].mean() > prediction.maps[0][mask == 0].mean()
    assert prediction.scores[0] > prediction.scores[1]
    loaded = load_detector(knn.save(tmp_path / "knn"))
    assert loaded.tile_size == 64 and np.allclose(loaded.predict([defect]).scores, prediction.scores[:1], atol=1e-5)
    session = onnxruntime.InferenceSession(str(export_onnx(knn, tmp_path / "knn.onnx")))
    scores, maps = session.run(None, {"images": np.stack([defect, defect, normals[0]])})
    assert np.allclose(scores[:1], prediction.scores[:1], atol=1e-3) and np.allclose(maps[0], prediction.maps[0], atol=1e-3)
