import importlib.util
import os
import zlib

import keras
import numpy as np
import pytest

import keras_mae
from keras_mae.visualization import write_png

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
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
    lines = [l for l in printed.splitlines() if l.startswith("linear probe")]
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
