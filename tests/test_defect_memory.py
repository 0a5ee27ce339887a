import numpy as np
import pytest
import torch

from detectors import load_detector
from detectors.defect_memory import defect_bank, defect_evidence, defect_rows
from detectors.hybrid import SHOTS_FOR_FULL_SHARE, describe_fusion, weight_from_shots
from detectors.memory import dense_nearest_maps, nearest_maps

from test_hybrid import NORMALS, TEST_DEFECTS, TEST_NORMALS, predict, real_defects, tiny


def test_the_defect_rows_are_the_patches_under_the_masks():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0, 0, 1, 2] = masks[1, 0, 3, 0] = 1
    rows = defect_rows(maps, masks)
    torch.testing.assert_close(rows, torch.stack([maps[0, :, 1, 2], maps[1, :, 3, 0]]))
    assert len(defect_bank(maps, masks, size=1)) == 1  # a coreset: at most ``size`` rows
    with pytest.raises(ValueError, match="no defect patches"):
        defect_bank(maps, torch.zeros(2, 1, 4, 4))


def test_evidence_is_positive_near_a_known_defect_and_negative_near_the_normals():
    generator = torch.Generator().manual_seed(0)
    normal_bank, known = torch.randn(50, 8, generator=generator), torch.randn(5, 8, generator=generator) + 6.0
    patches = torch.stack([normal_bank[3] + 0.01, known[2] + 0.01, -known[2]]).T.reshape(1, 8, 1, 3)  # normal, known, unseen
    distance, _ = nearest_maps(patches, normal_bank)
    evidence = defect_evidence(patches, distance, known).flatten()
    assert evidence[0] < 0.1 and evidence[1] > 0.9
    assert evidence[0] < evidence[2] < evidence[1]  # a defect of a kind never seen: between the two
    # one matrix product gives what the blocked search gives
    torch.testing.assert_close(dense_nearest_maps(patches, normal_bank)[0], distance, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("curve", "n", "expected"), [
    ([0.80, 0.85, 0.90, 0.89], SHOTS_FOR_FULL_SHARE, 1.0),  # the best weight, in full
    ([0.80, 0.85, 0.90, 0.89], SHOTS_FOR_FULL_SHARE // 2, 0.5),  # half the shots: half of it
    ([0.999, 0.9995, 0.9991, 0.999], 40, 0.0),  # a flat curve says nothing: 0
])
def test_the_defect_memory_weight_is_the_shots_choice_scaled_by_their_number(curve, n, expected):
    assert weight_from_shots([0.0, 0.5, 1.0, 2.0], curve, n) == pytest.approx(expected)


def test_shots_all_found_at_every_weight_add_no_defect_memory():
    detector = tiny().fit(NORMALS, progress=False, shots=real_defects(6))
    record = detector.state_["fusion"]["defect_memory"]
    assert record["n"] == 6 and len(set(record["validation_image_auroc"])) == 1  # this data's obvious defects
    assert record["weight"] == 0.0 and not detector.model_.has_defect_memory and detector.state_["defect_bank_size"] == 0


@pytest.fixture(scope="module")
def with_defect_memory():
    """A detector with a defect memory of weight 1 (fixed: on this small data every real defect is found
    at every weight, so the shots choose 0), and the same without it."""
    forced = tiny(defect_memory=1.0).fit(NORMALS, progress=False, shots=real_defects(6))
    plain = tiny(defect_memory=False).fit(NORMALS, progress=False, shots=real_defects(6))
    return forced, plain


def test_a_defect_memory_raises_the_image_score_near_known_defects_only(with_defect_memory):
    forced, plain = with_defect_memory
    assert forced.state_["fusion"]["chosen"]["defect_memory"] == 1.0 and "defect_memory" not in plain.state_["fusion"]
    assert forced.state_["fusion"]["defect_memory"]["method"] == "fixed"
    assert 0 < forced.state_["defect_bank_size"] <= len(forced.model_.defect_bank)
    with_memory, without = predict(forced), predict(plain)
    np.testing.assert_array_equal(with_memory.maps, without.maps)  # the map is the heads'
    gain = with_memory.scores - without.scores
    n = len(TEST_NORMALS)
    assert gain[n:].mean() > gain[:n].mean()  # the test defects are like the shots (conftest.with_defect)
    assert "a memory of the 6 real defects' patches weighs 1 in the image score" in describe_fusion(forced.state_["fusion"])


def test_a_defect_memory_is_saved_loaded_and_exported(with_defect_memory, tmp_path):
    import onnxruntime

    from detectors.export import export_onnx

    forced, _ = with_defect_memory
    loaded = load_detector(forced.save(tmp_path / "model"))
    assert loaded.model_.has_defect_memory
    np.testing.assert_allclose(predict(loaded).scores, predict(forced).scores, rtol=1e-5, atol=1e-5)
    session = onnxruntime.InferenceSession(str(export_onnx(forced, tmp_path / "model.onnx")))
    images = np.stack(TEST_NORMALS[:2] + [image for image, _ in TEST_DEFECTS[:2]])
    scores, _ = session.run(None, {"images": images})
    np.testing.assert_allclose(scores, forced.predict(list(images)).scores, rtol=1e-4, atol=1e-4)
