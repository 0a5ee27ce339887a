import json

import numpy as np
import pytest
import torch

from detectors import DRAEM, Anomaly, Backbone, Detector, FeatureDiscriminator, PatchKNN, auroc, load_detector
from detectors.backbone import _load_state_dict, _weights_path
from detectors.features import downsample_mask
from synth import DRAEM as DRAEMGenerator

from conftest import smooth, with_defect


NORMALS = [smooth(i) for i in range(12)]
TEST_NORMALS = [smooth(100 + i) for i in range(8)]
TEST_DEFECTS = [with_defect(smooth(200 + i), i) for i in range(8)]


def tiny_feature(**kwargs) -> FeatureDiscriminator:
    options = dict(image_size=64, epochs=4, hidden=32, cls_channels=8, synth="draem", anomalies_per_image=3, batch_size=8)
    options.update(kwargs)
    return FeatureDiscriminator(**options)


def scores_of(detector):
    images = TEST_NORMALS + [image for image, _ in TEST_DEFECTS]
    return detector.predict(images)


def test_backbone_levels_and_pretrained_weights():
    backbone = Backbone("efficientnet-lite0")
    assert backbone.channels == [40, 112] and backbone.strides == [8, 16]
    levels = backbone(torch.rand(2, 3, 64, 64) * 255)
    assert [tuple(level.shape) for level in levels] == [(2, 40, 8, 8), (2, 112, 4, 4)]
    weights = _load_state_dict(_weights_path("efficientnet-lite0"))
    assert torch.equal(backbone.stem[0].weight, weights["_conv_stem.weight"])
    assert torch.equal(backbone.blocks[4]._project_conv.weight, weights["_blocks.4._project_conv.weight"])
    with pytest.raises(ValueError, match="stages must be in 1..7"):
        Backbone(stages=(0, 3))
    with pytest.raises(ValueError, match="unknown backbone"):
        Backbone("efficientnet-b9")


def test_backbone_stays_frozen_in_train_mode():
    backbone = Backbone()
    backbone.train()
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())


def test_downsample_mask_keeps_tiny_anomalies():
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, 0, 10:12, 10:12] = 1  # smaller than one 8x8 cell
    down = downsample_mask(masks, (8, 8))
    assert down[0].sum() == 1 and down[0, 0, 1, 1] == 1
    assert down[1].sum() == 0


def test_knn_ranks_defects_and_round_trips(tmp_path):
    knn = PatchKNN(image_size=64, coreset_ratio=0.5).fit(NORMALS, progress=False)
    prediction = scores_of(knn)
    labels = np.r_[np.zeros(8), np.ones(8)]
    assert auroc(prediction.scores, labels) > 0.9
    assert prediction.maps.shape == (16, 64, 64)
    # the map peaks inside the defect
    image, mask = TEST_DEFECTS[0]
    peak = np.unravel_index(np.argmax(knn.predict([image]).maps[0]), (64, 64))
    assert mask[max(peak[0] - 4, 0) : peak[0] + 5, max(peak[1] - 4, 0) : peak[1] + 5].any()
    knn.save(tmp_path / "knn")
    loaded = load_detector(tmp_path / "knn")
    assert isinstance(loaded, PatchKNN) and loaded.get_config() == knn.get_config()
    again = scores_of(loaded)
    np.testing.assert_array_equal(again.scores, prediction.scores)
    np.testing.assert_array_equal(again.maps, prediction.maps)
    assert not any(k.startswith("features.backbone") for k in loaded._weights())


def test_feature_discriminator_learns_obvious_synthetic_defects(tmp_path):
    detector = tiny_feature().fit(NORMALS, progress=False)
    history = detector.state_["loss_history"]
    assert history[-1] < history[0]
    prediction = scores_of(detector)
    assert auroc(prediction.scores, np.r_[np.zeros(8), np.ones(8)]) > 0.9
    detector.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["detector"] == "feature" and config["config"]["synth"] == "draem"
    loaded = Detector.load(tmp_path / "model")
    again = scores_of(loaded)
    np.testing.assert_array_equal(again.scores, prediction.scores)
    np.testing.assert_array_equal(again.maps, prediction.maps)


def test_feature_discriminator_is_deterministic_and_seeded():
    a = scores_of(tiny_feature(epochs=1).fit(NORMALS, progress=False)).scores
    b = scores_of(tiny_feature(epochs=1).fit(NORMALS, progress=False)).scores
    c = scores_of(tiny_feature(epochs=1, seed=1).fit(NORMALS, progress=False)).scores
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_feature_discriminator_with_normal_distance_channel(tmp_path):
    detector = tiny_feature(normal_distance=True, bank_size=64).fit(NORMALS, progress=False)
    assert detector.state_["memory_bank_size"] == 128  # one bank per fold of the normal images
    assert float(detector.model_.distance_scale) > 0
    prediction = scores_of(detector)
    assert auroc(prediction.scores, np.r_[np.zeros(8), np.ones(8)]) > 0.9
    detector.save(tmp_path / "model")
    again = scores_of(load_detector(tmp_path / "model"))
    np.testing.assert_array_equal(again.scores, prediction.scores)


def test_feature_discriminator_with_ready_made_anomalies_and_feature_noise():
    generator = DRAEMGenerator()
    ready = []
    for i, image in enumerate(NORMALS):
        sample = generator(image, np.random.default_rng(i))
        ready.append(Anomaly(sample.image, sample.mask))
    detector = tiny_feature(synth="none", feature_noise=True, epochs=2).fit(NORMALS, ready, progress=False)
    assert detector.state_["n_anomalies"] == len(ready)
    with pytest.raises(ValueError, match="no training anomalies"):
        tiny_feature(synth="none").fit(NORMALS, progress=False)


def test_draem_trains_and_round_trips(tmp_path):
    detector = DRAEM(image_size=64, reconstructive_width=4, discriminative_width=4, epochs=2, batch_size=4)
    detector.fit(NORMALS, progress=False)
    prediction = scores_of(detector)
    assert prediction.maps.shape == (16, 64, 64) and np.all((prediction.maps >= 0) & (prediction.maps <= 1))
    detector.save(tmp_path / "draem")
    again = scores_of(DRAEM.load(tmp_path / "draem"))
    np.testing.assert_array_equal(again.scores, prediction.scores)
    with pytest.raises(ValueError, match="holds a draem detector"):
        PatchKNN.load(tmp_path / "draem")


def test_errors_are_clear(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchKNN().predict(NORMALS[:1])
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_detector(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a detector config"):
        load_detector(tmp_path)
    with pytest.raises(ValueError, match="image_size must be at least 32"):
        DRAEM(image_size=24)
    with pytest.raises(ValueError, match="aspect must be 'auto' or 'square'"):
        PatchKNN(aspect="wide")


def test_the_patch_detectors_share_one_base_and_say_what_they_can_do():
    from detectors import HybridDetector, PatchDetector, SyntheticAnomalies
    from detectors.registry import DETECTORS

    kinds = {name: DETECTORS.get(name) for name in DETECTORS.names()}
    assert {n for n, k in kinds.items() if issubclass(k, PatchDetector)} == {"hybrid", "feature", "knn"}
    assert {n for n, k in kinds.items() if k.uses_anomalies} == {n for n, k in kinds.items() if issubclass(k, SyntheticAnomalies)}
    assert {n for n, k in kinds.items() if k.exportable} == {"hybrid", "knn"}
    assert kinds["knn"].uses_anomalies is False
    for klass in (HybridDetector, FeatureDiscriminator, PatchKNN):  # the base's options, in every constructor's parameters
        assert {"backbone", "stages", "pretrained", "tile_size", "tile_overlap", "image_size", "seed"} <= set(klass.param_names())
    assert DRAEM().batch_size == 8 and DRAEM().synth == "draem" and HybridDetector().synth == "draem,nsa,cutpaste"
    hybrid = HybridDetector(backbone="efficientnet-lite0", stages=(3,), tile_size=128, tile_overlap=32)
    assert hybrid.reference_options() == {"backbone": "efficientnet-lite0", "stages": [3], "pretrained": True,
                                          "tile_size": 128, "tile_overlap": 32}
    assert PatchKNN(**hybrid.reference_options()).feature_options() == hybrid.feature_options()
    assert DRAEM().reference_options() == {}
    with pytest.raises(ValueError, match="a feature detector cannot be exported to ONNX yet; exportable: hybrid, knn"):
        FeatureDiscriminator().check_exportable()
    with pytest.raises(ValueError, match="k > 1"):
        PatchKNN(k=3).check_exportable()
    PatchKNN().check_exportable()
    with pytest.raises(ValueError, match="tile_overlap"):
        PatchKNN(tile_size=64, tile_overlap=64)  # the base checks the tiling of every patch detector


def test_no_detector_kind_is_compared_with_a_string_outside_the_registry():
    """What a detector can do is asked of the detector (its capabilities), not read from its name."""
    import re
    from pathlib import Path

    from detectors.registry import DETECTORS

    root = Path(__file__).resolve().parents[1]
    names = "|".join(DETECTORS.names())
    compared = re.compile(rf"""(==|!=|\bin)\s*\(?["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for folder in ("synth", "detectors", "curate", "anomalyforge", "benchmarks")
        for path in sorted((root / folder).rglob("*.py")) if path.name != "registry.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if compared.search(line) and "generator" not in line and "name ==" not in line
    ]
    assert found == []


def test_fitted_state_ends_in_an_underscore_and_exists_only_after_fit(tmp_path):
    knn = PatchKNN(image_size=64, pretrained=False)
    assert not hasattr(knn, "model_") and not hasattr(knn, "state_") and not knn.is_fitted and knn.calibration is None
    with pytest.raises(RuntimeError, match="not fitted; call fit"):
        knn.predict(NORMALS[:1])
    assert knn.fit(NORMALS[:4], progress=False) is knn
    assert knn.is_fitted and knn.state_["input_shape"] == [64, 64] and knn.model_ is not None
    loaded = load_detector(knn.save(tmp_path / "knn"))
    assert loaded.state_["bank_size"] == knn.state_["bank_size"]
    assert PatchKNN(**knn.get_params()).is_fitted is False  # get_params rebuilds an unfitted copy


def test_a_training_bar_in_a_log_redraws_at_its_own_pace(monkeypatch, capsys):
    """The loss shown beside the bar must not force a redraw every step: in a log (TQDM_MININTERVAL
    set by the CLI) that is a line per step."""
    import torch

    from detectors.training import train_loop

    monkeypatch.setenv("TQDM_MININTERVAL", "30")
    model = torch.nn.Linear(2, 1)

    def batches(epoch, rank, world):
        for _ in range(25):
            yield {"x": torch.randn(4, 2)}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    history = train_loop(model, optimizer, None, 2, batches, lambda m, b: m(b["x"]).pow(2).mean(), progress=True, desc="toy")
    drawn = capsys.readouterr().err
    assert len(history) == 2 and "toy" in drawn
    assert drawn.count("\r") + drawn.count("\n") <= 4, drawn[-300:]
