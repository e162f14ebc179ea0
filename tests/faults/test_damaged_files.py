"""An image file damaged in its middle: named with its path, the checkpoint kept.

Listing a folder checks each file's header and end (`tests/faults/test_bad_inputs.py`);
a file whose start and end are intact but whose inside is not passes that check,
and TensorFlow's decoder then stops mid-epoch with a message that names no file.
The recipes turn that error into one naming the file.
"""

import io

import keras
import numpy as np
import pytest

from tests.helpers.tiny import smallest_mae

pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")


tiny_mae = smallest_mae


def damaged_jpeg():
    """A JPEG whose first bytes and end marker are intact and whose tables are zeros."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (10, 9), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    data[20:200] = bytes(180)
    return bytes(data)


class StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def write_folder(root, count=16):
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 9), dtype=np.uint8)).save(folder / f"{i}.jpg")


def test_file_damaged_inside_is_named_and_the_checkpoint_kept(tmp_path):
    from keras_mae.data import load_source
    from keras_mae.recipes.callbacks import checkpoint_epoch
    from keras_mae.recipes.pretrain import pretrain

    root = tmp_path / "images"
    write_folder(root)
    source = load_source(f"folder:{root}", "train")
    output = tmp_path / "run"
    keras.utils.set_random_seed(0)
    with pytest.raises(KeyboardInterrupt):  # a run stopped after its first epoch
        pretrain(
            tiny_mae(),
            source,
            epochs=2,
            batch_size=4,
            warmup_epochs=0,
            output_dir=str(output),
            callbacks=[StopAtEpoch(1)],
        )
    assert checkpoint_epoch(str(output / "checkpoint")) == 1
    checkpoint = (output / "checkpoint" / "variables.npz").read_bytes()

    bad = root / "train" / "class_1" / "7.jpg"
    bad.write_bytes(damaged_jpeg())
    source = load_source(f"folder:{root}", "train")  # the header check lets it pass
    mae = tiny_mae()
    with pytest.raises(ValueError) as raised:
        pretrain(mae, source, epochs=2, batch_size=4, warmup_epochs=0, output_dir=str(output))
    message = str(raised.value)
    assert str(bad) in message, message
    assert "1 of 16 files" in message and "delete or replace" in message, message
    assert "in the middle of an epoch" in message and "checkpoint" in message, message
    # The first epoch's checkpoint is what it was; no model file was written over it.
    assert (output / "checkpoint" / "variables.npz").read_bytes() == checkpoint
    assert checkpoint_epoch(str(output / "checkpoint")) == 1


def test_other_errors_pass_through_unchanged(tmp_path):
    from keras_mae.data import load_source

    root = tmp_path / "images"
    write_folder(root, count=4)
    source = load_source(f"folder:{root}", "train")
    assert source.explain_read_error(RuntimeError("not a decoding error")) is None
