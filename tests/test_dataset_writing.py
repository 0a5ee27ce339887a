import json

import cv2
import numpy as np
import pytest
from conftest import folder_bytes, mix, textured

from synth import CutPaste, ImageFiles, build_generator, read_generated, read_image
from synth.dataset import generate_dataset, sample_seed
from synth.dataset.writers import mask_to_uint8


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
def test_round_trip_is_pixel_exact_and_seeds_recreate_samples(tmp_path, normals, fmt):
    out = tmp_path / fmt
    generate_dataset(normals, mix(normals), 12, out, seed=3, fmt=fmt, shard_size=5, progress=False,
                     input_root=normals[0].parent)
    samples = list(read_generated(out))
    assert [s.record["index"] for s in samples] == list(range(12))
    generator = mix(normals)
    for sample in samples:
        record = sample.record
        assert record["seed"] == sample_seed(3, record["index"])
        source = read_image(normals[0].parent / record["source"])
        again = generator(source, np.random.default_rng(record["seed"]))
        assert again.generator == record["generator"] and again.params == record["params"]
        assert np.array_equal(sample.image, again.image)
        assert np.array_equal(mask_to_uint8(sample.mask), mask_to_uint8(again.mask))


def test_hub_folder_loads_with_datasets(tmp_path, normals):
    import datasets

    out = tmp_path / "hf"
    generate_dataset(normals, mix(normals), 7, out, seed=1, fmt="hf", shard_size=3, progress=False)
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"train-0000{k}-of-00003.parquet" for k in range(3)]
    card = (out / "README.md").read_text()
    assert "configs:" in card and "dataset_info:" in card and "num_examples: 7" in card
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.column_names == ["image", "mask", "label", "generator", "params", "seed", "source", "eap"]
    assert ds["eap"] == [None] * 7  # not scored yet
    written = list(read_generated(out))
    for row, sample in zip(ds, written):
        assert np.array_equal(np.asarray(row["image"]), sample.image)
        assert np.array_equal(np.asarray(row["mask"]).astype(np.float32) / 255.0, sample.mask)
        assert json.loads(row["params"]) == sample.record["params"]
        assert row["seed"] == sample.record["seed"] and row["source"] == sample.record["source"]


def test_mvtec_layout_and_manifest(tmp_path, normals):
    out = tmp_path / "mv"
    generator = build_generator("mix", sources=ImageFiles(normals), options={"mix": {"p_unchanged": 0.3}})
    generate_dataset(normals, generator, 20, out, seed=0, fmt="mvtec", progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 20
    for line in lines:
        record = json.loads(line)
        image = out / record["image"]
        assert image.is_file()
        if record["label"] == 0:
            assert image.parent.name == "good" and record["mask"] is None
        else:
            assert image.parent.name == record["generator"]
            mask = cv2.imread(str(out / record["mask"]), cv2.IMREAD_GRAYSCALE)
            assert mask.shape == cv2.imread(str(image)).shape[:2] and mask.max() > 0
    assert any(json.loads(line)["label"] == 0 for line in lines)


@pytest.mark.parametrize("fmt", ["mvtec", "hf"])
def test_interrupted_run_resumes_without_duplicates_or_losses(tmp_path, normals, fmt):
    reference = tmp_path / "reference"
    generate_dataset(normals, mix(normals), 11, reference, seed=5, fmt=fmt, shard_size=4, progress=False)

    out = tmp_path / "resumed"

    def interrupt(index):
        if index == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(normals, mix(normals), 11, out, seed=5, fmt=fmt, shard_size=4, progress=False,
                         on_sample=interrupt)
    partial = json.loads((out / "dataset.json").read_text())
    assert partial["complete"] is False
    # a torn manifest line, as a crash in the middle of a write leaves it
    with open(out / "manifest.jsonl", "a") as handle:
        handle.write('{"index": 9, "gen')
    report = generate_dataset(normals, mix(normals), 11, out, seed=5, fmt=fmt, shard_size=4, progress=False)
    assert report.already_done in (4, 7)  # hf resumes from the last complete shard
    assert report.written + report.already_done == 11
    assert folder_bytes(out) == folder_bytes(reference)
    # running the finished command again writes nothing new
    again = generate_dataset(normals, mix(normals), 11, out, seed=5, fmt=fmt, shard_size=4, progress=False)
    assert again.written == 0 and folder_bytes(out) == folder_bytes(reference)


def test_hf_manifest_is_rebuilt_from_a_shard_written_before_a_crash(tmp_path, normals):
    out = tmp_path / "hf"
    generate_dataset(normals, mix(normals), 6, out, seed=2, fmt="hf", shard_size=3, progress=False)
    full = (out / "manifest.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (out / "manifest.jsonl").write_text("".join(lines[:3]))  # shard 1 landed, its lines did not
    report = generate_dataset(normals, mix(normals), 6, out, seed=2, fmt="hf", shard_size=3, progress=False)
    assert report.written == 0
    assert (out / "manifest.jsonl").read_text() == full


def test_workers_give_byte_identical_output(tmp_path, normals):
    one, two = tmp_path / "one", tmp_path / "two"
    generate_dataset(normals, mix(normals), 10, one, seed=9, fmt="hf", workers=1, progress=False)
    generate_dataset(normals, mix(normals), 10, two, seed=9, fmt="hf", workers=2, progress=False)
    assert folder_bytes(one) == folder_bytes(two)


def test_corrupt_input_file_is_reported_and_the_run_finishes(tmp_path, normals):
    broken = normals[0].parent / "img_broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    paths = sorted(normals + [broken])
    report = generate_dataset(paths, mix(paths), 12, tmp_path / "out", seed=0, fmt="mvtec", progress=False)
    assert report.written == 12 and not report.failed
    assert list(report.bad_files) == [str(broken)]
    assert report.bad_files[str(broken)] == f"{broken}: truncated PNG (the file ends before its last chunk)"
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert str(broken) in info["skipped_files"] and info["complete"] is True
    sources = {json.loads(line)["source"] for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()}
    assert "img_broken.png" not in sources


def test_refuses_an_output_folder_of_another_run(tmp_path, normals):
    out = tmp_path / "out"
    generate_dataset(normals, CutPaste(), 3, out, seed=0, progress=False)
    with pytest.raises(FileExistsError, match="seed"):
        generate_dataset(normals, CutPaste(), 3, out, seed=1, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_dataset(normals, CutPaste(), 3, tmp_path / "other", progress=False)


def test_workers_start_after_the_parent_used_opencv_threads(tmp_path, normals):
    """Forked workers used to hang when the parent had used OpenCV's thread pool (e.g. after reading
    images); the job runs in a child process here so that a hang fails the test instead of the run."""
    import subprocess
    import sys

    script = (
        "import sys, cv2, numpy as np\n"
        "from synth.dataset import generate_dataset\nfrom synth import CutPaste\n"
        "cv2.setNumThreads(2)\n"
        "big = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)\n"
        "cv2.GaussianBlur(big, (0, 0), 5); cv2.resize(big, (300, 300))\n"
        "paths = sys.argv[2:]\n"
        "report = generate_dataset(paths, CutPaste(), 6, sys.argv[1], workers=2, progress=False)\n"
        "print('written', report.written)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out"), *map(str, normals)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "written 6" in done.stdout


def test_png_compression_changes_the_bytes_not_the_pixels(tmp_path, normals):
    sizes = {}
    for level in (None, 0, 9):
        out = tmp_path / f"level{level}"
        generate_dataset(normals, mix(normals), 6, out, seed=1, progress=False, png_compression=level)
        sizes[level] = sum(p.stat().st_size for p in out.rglob("*.png"))
        samples = list(read_generated(out))
        if level is None:
            reference = samples
        for a, b in zip(reference, samples):
            assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert json.loads((out / "dataset.json").read_text())["png_compression"] == level
    assert sizes[9] < sizes[0]
    with pytest.raises(ValueError, match="png_compression must be an integer 0-9"):
        generate_dataset(normals, mix(normals), 2, tmp_path / "bad", progress=False, png_compression=10)


def png_row_filters(data: bytes, height: int) -> set[int]:
    """The filter type byte of each row of an 8-bit PNG (from its zlib-inflated IDAT chunks)."""
    import struct
    import zlib

    position, idat = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    return {raw[row * stride] for row in range(height)}


def test_default_png_is_lossless_and_uses_the_up_filter():
    from synth.common.png import encode_png

    image, grey = textured(40, 56, seed=2), textured(40, 56, seed=3, grey=True)
    for array, flag in ((image, cv2.IMREAD_COLOR), (grey, cv2.IMREAD_GRAYSCALE)):
        data = encode_png(array)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
        assert np.array_equal(decoded[..., ::-1] if array.ndim == 3 else decoded, array)
        if hasattr(cv2, "IMWRITE_PNG_FILTER"):
            assert png_row_filters(data, 40) == {2}  # 2: "Up"
    with pytest.raises(ValueError, match="PNG compression must be an integer 0-9"):
        encode_png(image, compression=12)


def _worker_threads(_):
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info()]


def test_local_workers_run_blas_on_one_thread(normals):
    """Worker processes share the cores: BLAS and OpenMP pools of one thread each, not one per core."""
    import multiprocessing as mp

    from synth.dataset.workers import GenerationTask, _init_pool_worker

    task = GenerationTask(normals, normals[0].parent, mix(normals), 0)
    with mp.get_context("fork").Pool(1, initializer=_init_pool_worker, initargs=(task, False)) as pool:
        threads = pool.map(_worker_threads, [0])[0]
    assert threads and set(threads) == {1}


def test_evenly_spaced_keeps_the_ends_and_never_repeats():
    from synth.dataset.manifest import evenly_spaced

    items = list(range(100, 112))
    assert evenly_spaced(items, 3) == [100, 106, 111]  # first, middle (5.5 rounds to 6), last
    assert evenly_spaced(items, 50) == items  # never more than there are
    assert evenly_spaced(items[:2], 1) == [100]
    assert evenly_spaced([], 5) == [] and evenly_spaced(items, 0) == []
