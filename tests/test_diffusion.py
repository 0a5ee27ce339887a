import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anomalyforge.cli import main
from conftest import smooth, textured, with_defect, write_rgb
from synth import AnomalyTransform, DefectMaskSampler, build_generator
from synth.diffusion import (
    DefectShot, PretrainedDefectDiffusion, ScratchDefectDiffusion, defect_window, load_defect_diffusion, paste,
    split_shots,
)
from synth.diffusion import training_windows
from synth.diffusion.checkpoint import load_training_state

DEVICE = os.environ.get("ANOMALYFORGE_TEST_DEVICE", "cpu")  # e.g. cuda, to run the model tests on a GPU
TINY_SCRATCH = dict(
    resolution=16, min_window=12, block_out_channels=(8, 16), batch_size=2, train_steps=3, num_inference_steps=2,
    device=DEVICE,
)


def shots_of(n: int = 3, size: int = 64) -> list[DefectShot]:
    shots = []
    for i in range(n):
        image, mask = with_defect(smooth(300 + i, size), i)
        shots.append(DefectShot(image, mask, "dent" if i % 2 == 0 else "scratch"))
    return shots


def normals_of(n: int = 4, size: int = 64) -> list[np.ndarray]:
    return [smooth(i, size) for i in range(n)]


@pytest.fixture(scope="module")
def scratch_model(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("scratch") / "model"
    ScratchDefectDiffusion(**TINY_SCRATCH).fit(shots_of(), normals_of(), progress=False).save_pretrained(directory)
    return directory


# -- new masks -------------------------------------------------------------------------------

def test_new_masks_follow_the_real_shapes_and_stay_inside():
    real = np.zeros((100, 100), np.uint8)
    real[40:50, 20:80] = 1  # a 10 x 60 bar
    sampler = DefectMaskSampler([real], modes=("affine",), scale=(1.0, 1.0), rotation=(0, 0), stretch=(1.0, 1.0))
    mask, params = sampler(np.zeros((100, 100, 3), np.uint8), np.random.default_rng(0))
    ys, xs = np.nonzero(mask)
    assert (np.ptp(ys) + 1, np.ptp(xs) + 1) == (10, 60)
    assert params["mode"] == "affine"
    for mode in ("affine", "elastic", "perlin"):
        sampler = DefectMaskSampler([real], modes=(mode,))
        for seed in range(5):
            mask, params = sampler(np.zeros((50, 70, 3), np.uint8), np.random.default_rng(seed))
            assert mask.shape == (50, 70) and mask.dtype == bool and mask.any(), (mode, seed)
            assert 0.1 * real.sum() * (50 / 100) ** 2 < mask.sum() < 4 * real.sum(), (mode, seed, mask.sum())


def test_new_masks_land_on_the_object_and_repeat_with_the_seed():
    image = np.full((80, 80, 3), 10, np.uint8)
    image[20:60, 20:60] = 200  # the object on a dark background
    sampler = DefectMaskSampler(background="border")
    for seed in range(6):
        mask, params = sampler(image, np.random.default_rng(seed))
        assert mask.any() and not mask[:18].any() and not mask[62:].any() and not mask[:, :18].any(), seed
    a, _ = sampler(image, np.random.default_rng(3))
    b, _ = sampler(image, np.random.default_rng(3))
    c, _ = sampler(image, np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="modes"):
        DefectMaskSampler(modes=("blur",))


def test_window_holds_the_defect_and_paste_keeps_the_outside():
    mask = np.zeros((60, 90), bool)
    mask[50:58, 80:88] = True
    y0, y1, x0, x1 = defect_window(mask, context=1.0, min_size=20)
    assert y0 <= 50 and y1 >= 58 and x0 <= 80 and x1 >= 88 and y1 <= 60 and x1 <= 90
    assert y1 - y0 == 20 and x1 - x0 == 20
    rng = np.random.default_rng(0)
    for _ in range(10):
        y0, y1, x0, x1 = defect_window(mask, 1.0, 20, rng, jitter=0.3)
        assert y0 <= 50 and y1 >= 58 and x0 <= 80 and x1 >= 88
    image = textured(60, 90)
    window = defect_window(mask, 1.0, 20)
    out = paste(image, np.zeros((16, 16, 3), np.uint8), mask, window)
    assert np.array_equal(out[~mask], image[~mask]) and (out[mask] == 0).all()
    with pytest.raises(ValueError, match="empty"):
        defect_window(np.zeros((10, 10), bool))


# -- the from-scratch backend ------------------------------------------------------------------

def test_scratch_backend_paints_inside_the_mask_only(scratch_model):
    generator = load_defect_diffusion(scratch_model)
    assert isinstance(generator, ScratchDefectDiffusion) and generator.defects == ["dent", "scratch"]
    image = textured(70, 90)
    sample = generator(image, np.random.default_rng(1))
    inside = sample.mask > 0
    assert sample.label == 1 and sample.generator == "diffusion" and inside.any()
    assert sample.params["defect"] in ("dent", "scratch")
    assert np.array_equal(sample.image[~inside], image[~inside])
    assert (np.abs(sample.image[inside].astype(int) - image[inside]).sum(-1) > 0).mean() > 0.5
    again = load_defect_diffusion(scratch_model)(image, np.random.default_rng(1))
    other = generator(image, np.random.default_rng(2))
    assert np.array_equal(sample.image, again.image) and np.array_equal(sample.mask, again.mask)
    assert not np.array_equal(sample.image, other.image)
    grey = np.repeat(textured(70, 90, grey=True)[..., None], 3, axis=2)
    painted = generator(grey, np.random.default_rng(1)).image
    assert np.array_equal(painted[..., 0], painted[..., 1]) and np.array_equal(painted[..., 1], painted[..., 2])
    assert not np.array_equal(painted, grey)


def test_scratch_training_learns_and_repeats_with_the_seed():
    shots, normals = shots_of(), normals_of()
    options = {**TINY_SCRATCH, "train_steps": 40, "learning_rate": 2e-3, "ema_decay": 0}
    a = ScratchDefectDiffusion(**options).fit(shots, normals, progress=False)
    history = a._state["loss_history"]
    assert np.mean(history[-10:]) < 0.8 * np.mean(history[:5])
    b = ScratchDefectDiffusion(**{**options, "train_steps": 5}).fit(shots, normals, progress=False)
    c = ScratchDefectDiffusion(**{**options, "train_steps": 5}).fit(shots, normals, progress=False)
    d = ScratchDefectDiffusion(**{**options, "train_steps": 5, "seed": 1}).fit(shots, normals, progress=False)
    weights = [dict(g._pipeline.unet.named_parameters()) for g in (b, c, d)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_mixed_precision_auto_is_bfloat16_only_where_the_hardware_computes_it(monkeypatch):
    from synth.common import saved

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "no")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert saved.resolve_mixed_precision("auto", "cpu") == expected
        assert saved.resolve_mixed_precision("auto") == expected
    assert saved.resolve_mixed_precision("auto", "mps") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
        assert saved.resolve_mixed_precision("auto") == expected
    assert saved.resolve_mixed_precision(False) == "no" and saved.resolve_mixed_precision("fp16") == "fp16"
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        ScratchDefectDiffusion(mixed_precision="fp32")


def test_bfloat16_training_is_used_recorded_and_repeats():
    shots, normals = shots_of(), normals_of()
    fits = {
        name: ScratchDefectDiffusion(**{**TINY_SCRATCH, "train_steps": 4, "mixed_precision": precision}).fit(
            shots, normals, progress=False)
        for name, precision in (("bf16", "bf16"), ("again", "bf16"), ("full", False))
    }
    assert fits["bf16"].fit_summary["mixed_precision"] == "bf16"
    assert fits["full"].fit_summary["mixed_precision"] == "no"
    weights = {name: dict(g._pipeline.unet.named_parameters()) for name, g in fits.items()}
    assert all(torch.equal(weights["bf16"][k], weights["again"][k]) for k in weights["bf16"])
    assert not all(torch.equal(weights["bf16"][k], weights["full"][k]) for k in weights["bf16"])  # autocast did run
    assert all(w.dtype == torch.float32 for w in weights["bf16"].values())  # the weights themselves stay float32


def test_interrupted_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    shots, normals = shots_of(), normals_of()
    options = {**TINY_SCRATCH, "train_steps": 6, "checkpoint_every": 2}
    whole = ScratchDefectDiffusion(**options).fit(shots, normals, progress=False)

    real_batch = training_windows.TrainingWindows.batch
    calls = {"n": 0}

    def failing_batch(self, rng, size):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4, after the checkpoint of step 2
            raise KeyboardInterrupt
        return real_batch(self, rng, size)

    monkeypatch.setattr(training_windows.TrainingWindows, "batch", failing_batch)
    with pytest.raises(KeyboardInterrupt):
        ScratchDefectDiffusion(**options).fit(shots, normals, progress=False, checkpoint_dir=tmp_path / "ck")
    assert load_training_state(tmp_path / "ck")["step"] == 2
    monkeypatch.setattr(training_windows.TrainingWindows, "batch", real_batch)
    resumed = ScratchDefectDiffusion(**options).fit(shots, normals, progress=False, checkpoint_dir=tmp_path / "ck")
    assert load_training_state(tmp_path / "ck")["step"] == 6
    assert resumed._state["loss_history"] == whole._state["loss_history"]
    for (name, p), q in zip(whole._pipeline.unet.named_parameters(), resumed._pipeline.unet.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    with pytest.raises(ValueError, match="other settings"):
        ScratchDefectDiffusion(**{**options, "block_out_channels": (16, 16)}).fit(
            shots, normals, progress=False, checkpoint_dir=tmp_path / "ck"
        )


def test_diffusion_generator_in_the_registry_and_albumentations(scratch_model):
    import albumentations as A

    generator = build_generator("diffusion", options={"diffusion": {"model": str(scratch_model), "defect": "scratch"}})
    assert generator.defect == "scratch"
    pipeline = A.Compose([AnomalyTransform(generator)], seed=5)
    image = textured(64, 64)
    first = pipeline(image=image, mask=np.zeros((64, 64), np.float32))
    pipeline = A.Compose([AnomalyTransform(generator)], seed=5)
    second = pipeline(image=image, mask=np.zeros((64, 64), np.float32))
    assert first["mask"].any() and np.array_equal(first["image"], second["image"])
    with pytest.raises(ValueError, match="model"):
        build_generator("diffusion")
    with pytest.raises(ValueError, match="not among"):
        load_defect_diffusion(scratch_model, defect="crack")


def test_loading_a_scratch_model_draws_no_progress_bar(scratch_model, capsys):
    from diffusers.utils import logging as diffusers_logging

    load_defect_diffusion(scratch_model)
    assert "Loading pipeline components" not in capsys.readouterr().err
    assert diffusers_logging.is_progress_bar_enabled()  # diffusers' own setting is left as it was


def test_fit_and_load_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="at least one defect shot"):
        ScratchDefectDiffusion(**TINY_SCRATCH).fit([], normals_of())
    with pytest.raises(ValueError, match="empty mask"):
        DefectShot(smooth(0), np.zeros((64, 64)), "dent")
    with pytest.raises(ValueError, match="does not match"):
        DefectShot(smooth(0), np.ones((10, 10)), "dent")
    with pytest.raises(FileNotFoundError, match="generator.json"):
        load_defect_diffusion(tmp_path)
    (tmp_path / "generator.json").write_text("{broken")
    with pytest.raises(ValueError, match="generator.json"):
        load_defect_diffusion(tmp_path)
    with pytest.raises(RuntimeError, match="not fitted"):
        ScratchDefectDiffusion()(smooth(0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="pretrained="):
        PretrainedDefectDiffusion(resolution=32).fit(shots_of(), normals_of())
    with pytest.raises(ValueError, match="cannot load"):
        PretrainedDefectDiffusion(pretrained=str(tmp_path / "missing"), resolution=32).fit(shots_of(), normals_of())
    with pytest.raises(ValueError, match="token"):
        PretrainedDefectDiffusion(pretrained="x", prompt="a photo")


# -- the pretrained backend on a tiny random inpainting pipeline ------------------------------

def _byte_characters() -> list[str]:
    """The byte-to-character table of CLIP's byte-level BPE."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    codes, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@pytest.fixture(scope="module")
def tiny_inpainting(tmp_path_factory) -> Path:
    """A randomly initialised Stable Diffusion inpainting pipeline, a few hundred kB, saved to disk."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny-sd")
    characters = _byte_characters()
    vocab = {c: i for i, c in enumerate(characters + [c + "</w>" for c in characters])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=48)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=48, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"], projection_dim=32,
    ))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=16,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(root / "pipeline")
    return root / "pipeline"


TINY_PRETRAINED = dict(resolution=32, min_window=16, batch_size=2, num_inference_steps=2, device=DEVICE)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_pretrained_backend_end_to_end(tiny_inpainting, tmp_path, lora_rank):
    from diffusers import StableDiffusionInpaintPipeline

    shots = shots_of()
    generator = PretrainedDefectDiffusion(
        pretrained=str(tiny_inpainting), lora_rank=lora_rank, train_steps=4, checkpoint_every=2, **TINY_PRETRAINED
    )
    generator.fit(shots, normals_of(), progress=False, checkpoint_dir=tmp_path / "ck")
    assert load_training_state(tmp_path / "ck")["step"] == 4
    generator.save_pretrained(tmp_path / "model")
    saved = sorted(p.name for p in (tmp_path / "model" / "textual_inversion").iterdir())
    assert saved == ["dent.safetensors", "scratch.safetensors"]
    assert (tmp_path / "model" / "lora" / "pytorch_lora_weights.safetensors").is_file() == (lora_rank > 0)

    # training moved the new words away from their start, and only them
    base = StableDiffusionInpaintPipeline.from_pretrained(tiny_inpainting, safety_checker=None)
    start_ids = base.tokenizer(generator.initializer, add_special_tokens=False).input_ids
    start = base.text_encoder.get_input_embeddings().weight[start_ids].mean(0)
    trained = generator._pipeline.text_encoder.get_input_embeddings().weight
    token_ids = generator._pipeline.tokenizer.convert_tokens_to_ids([generator.token(d) for d in generator.defects])
    assert all(not torch.allclose(trained[i], start) for i in token_ids)
    n_old = len(base.tokenizer)
    assert torch.equal(trained[:n_old], base.text_encoder.get_input_embeddings().weight)

    image = textured(48, 64)
    sample = generator(image, np.random.default_rng(0))
    inside = sample.mask > 0
    assert sample.label == 1 and inside.any()
    assert np.array_equal(sample.image[~inside], image[~inside]) and not np.array_equal(sample.image, image)

    loaded = load_defect_diffusion(tmp_path / "model")
    assert isinstance(loaded, PretrainedDefectDiffusion)
    loaded_table = loaded._pipeline.text_encoder.get_input_embeddings().weight
    loaded_ids = loaded._pipeline.tokenizer.convert_tokens_to_ids([loaded.token(d) for d in loaded.defects])
    assert torch.allclose(loaded_table[loaded_ids], trained[token_ids])
    if lora_rank:
        from peft import get_peft_model_state_dict

        trained_lora = get_peft_model_state_dict(generator._pipeline.unet)
        loaded_lora = get_peft_model_state_dict(loaded._pipeline.unet, adapter_name=loaded._pipeline.unet.active_adapters()[0])
        assert len(trained_lora) == len(loaded_lora) > 0
        assert any(v.abs().max() > 0 for k, v in trained_lora.items() if "lora_B" in k)  # the adapters were trained
        for (k, v), w in zip(sorted(trained_lora.items()), [loaded_lora[k] for k in sorted(loaded_lora)]):
            assert torch.allclose(v, w), k
    again = loaded(image, np.random.default_rng(0))
    np.testing.assert_allclose(again.image.astype(int), sample.image.astype(int), atol=1)
    other = loaded(image, np.random.default_rng(1))
    assert not np.array_equal(other.image, sample.image)


# -- shots from an MVTec folder and the command line -------------------------------------------

@pytest.fixture
def category(tmp_path) -> Path:
    root = tmp_path / "tile"
    for i in range(6):
        write_rgb(root / "train" / "good" / f"{i:03d}.png", smooth(i))
        write_rgb(root / "test" / "good" / f"{i:03d}.png", smooth(100 + i))
    for defect, offset in (("dent", 200), ("crack", 300)):
        (root / "ground_truth" / defect).mkdir(parents=True)
        for i in range(4):
            image, mask = with_defect(smooth(offset + i), i)
            write_rgb(root / "test" / defect / f"{i:03d}.png", image)
            cv2.imwrite(str(root / "ground_truth" / defect / f"{i:03d}_mask.png"), (mask * 255).astype(np.uint8))
    return root


def test_split_shots_keeps_the_rest_for_testing(category):
    (category / "test" / "dent" / "009.png").write_bytes(b"not a png")
    (category / "ground_truth" / "dent" / "009_mask.png").write_bytes(b"not a png")
    shots, held_out, bad = split_shots(category, 2, seed=0)
    assert sorted(s.defect for s in shots) == ["crack", "crack", "dent", "dent"]
    shot_files = {s.source for s in shots}
    assert not shot_files & {str(t.path) for t in held_out}
    assert len(held_out) + len(shots) + len(bad) == 6 + 4 + 5 and list(bad) == [str(category / "test" / "dent" / "009.png")]
    assert sum(t.defect == "good" for t in held_out) == 6
    with pytest.raises(ValueError, match="rust"):
        split_shots(category, 2, defects=["rust"])
    for path in (category / "test" / "crack").iterdir():
        path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="no readable defect shots"):
        split_shots(category, 2, defects=["crack"])


def test_fit_defects_then_generate_on_the_command_line(category, tmp_path, capsys):
    model = tmp_path / "model"
    args = ["fit-defects", "--data", str(category), "--out", str(model), "--shots", "2", "--steps", "3", "--quiet",
            "--set", "resolution=16", "min_window=12", "block_out_channels=[8,16]", "batch_size=2", "num_inference_steps=2",
            "mixed_precision=no"]  # YAML reads `no` as false: still full precision
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "learned 2 defect types from 4 shots" in printed and "(float32)" in printed and "preview sheet" in printed
    sheet = cv2.imread(str(model / "preview.png"))
    assert sheet is not None and sheet.shape[1] > 4 * 128  # two shots and three generated defects per row
    saved = json.loads((model / "generator.json").read_text())
    assert saved["backend"] == "scratch" and len(saved["state"]["shot_files"]) == 4
    out = tmp_path / "generated"
    assert main(["generate", "--input", str(category), "--generator", "diffusion", "--model", str(model),
                 "--defect", "dent", "--n", "3", "--out", str(out), "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["generator"] == "diffusion" and r["params"]["defect"] == "dent" for r in records)
    capsys.readouterr()
    assert main(["generate", "--input", str(category), "--generator", "diffusion", "--out", str(tmp_path / "x")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["fit-defects", "--data", str(category), "--out", str(tmp_path / "y"), "--set", "colour=1"]) == 2
    assert "colour" in capsys.readouterr().err
