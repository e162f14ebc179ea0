import importlib.util
import os
import zlib

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.recipes.visualization import write_png

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_example(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "examples", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_png(path):
    """Decode the 8-bit, filter-0 PNGs that write_png makes."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    channels = {0: 1, 2: 3}[data[25]]
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    raw = zlib.decompress(data[start : start + length])
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, channels)


def test_write_png_roundtrip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    write_png(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "a.png"), image)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_png(tmp_path / "b.png", np.zeros((4, 4, 2)))


def test_pretrain_example_end_to_end_quick(tmp_path, capsys):
    pretrain = load_example("pretrain")
    out = str(tmp_path)
    pretrain.main(["--epochs", "1", "--probe-epochs", "3", "--verbose", "0", "--output-dir", out])
    printed = capsys.readouterr().out
    assert "pre-training: 1 epochs" in printed
    lines = [line for line in printed.splitlines() if line.startswith("linear probe")]
    assert len(lines) == 2
    for line in lines:
        trained, random = (float(part.split()[-1]) for part in line.split("|"))
        assert 0.0 <= trained <= 1.0 and 0.0 <= random <= 1.0
    grid = read_png(os.path.join(out, "reconstructions.png"))
    assert grid.shape == (8 * 66 + 2, 3 * 66 + 2, 1)  # 8 digits x (original, masked, recon)
    encoder = keras.models.load_model(os.path.join(out, "encoder.keras"))
    assert isinstance(encoder, keras_mae.MAEEncoder)
    mae = keras.models.load_model(os.path.join(out, "mae.keras"))
    images = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(encoder(images)), keras.ops.convert_to_numpy(mae.encoder(images))
    )


def test_pretrain_example_rejects_unknown_dataset():
    pretrain = load_example("pretrain")
    with pytest.raises(SystemExit):
        pretrain.parse_args(["--dataset", "imagenet"])


def test_pretrain_and_evaluate_example_on_an_image_folder(tmp_path, capsys):
    """The in-memory folder example end to end (micro preset, grey 8x8 PNGs):
    pre-training with on-device augmentation, probe and fine-tune, both encoders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(["dark", "light"]):
        folder = tmp_path / "data" / "train" / name
        folder.mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 128, (8, 8)) + 127 * label
            Image.fromarray(pixels.astype("uint8")).save(folder / f"{i:02d}.png")
    example = load_example("pretrain_and_evaluate")
    out = tmp_path / "out"
    example.main(
        [
            "--data",
            str(tmp_path / "data"),
            "--holdout-per-class",
            "4",
            "--preset",
            "mae_vit_micro_patch2",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--probe-epochs",
            "30",
            "--probe-batch-size",
            "8",
            "--probe-blr",
            "6.4",
            "--finetune-epochs",
            "2",
            "--finetune-batch-size",
            "8",
            "--verbose",
            "0",
            "--output-dir",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "40 training and 8 held-out images of 2 classes" in printed
    assert "pre-training: 2 epochs" in printed
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["pretraining"]["epochs"] == 2
    for name in ("pre-trained", "random init"):
        assert 0.0 <= results[f"finetune {name}"] <= 1.0
    # The two classes differ in brightness alone: even the random-init cls token
    # separates them.
    assert results["probe random init cls"]["6.4"] >= 0.75
    grid = read_png(out / "reconstructions.png")
    assert grid.shape == (8 * (4 * 8 + 2) + 2, 3 * (4 * 8 + 2) + 2, 1)
    # Row i, first column: held-out image i (files 20-23 of each class), 4x upscaled,
    # back on its own 0-255 scale after normalisation and un-normalisation.
    held_out = [
        tmp_path / "data" / "train" / c / f"{i:02d}.png"
        for c in ("dark", "light")
        for i in range(20, 24)
    ]
    for row, path in enumerate(held_out):
        tile = grid[2 + row * 34 : 2 + row * 34 + 32 : 4, 2:34:4, 0].astype(int)
        assert np.abs(tile - np.asarray(Image.open(path), int)).max() <= 1
    encoder = keras.models.load_model(out / "encoder.keras")
    assert isinstance(encoder, keras_mae.MAEEncoder)
