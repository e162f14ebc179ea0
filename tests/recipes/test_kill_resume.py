"""The README's pre-training command, killed with SIGKILL at a random moment and
run again, ends bit-identical to a run that was never interrupted: every model
variable (weights, masking seed state), every optimizer variable (step count,
moments) and the host's random states, on the backend of this test process.

Then the other data paths, in this process: a tf.data folder source and a tfds
source resume to the same bits as well."""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest

import keras_mae
from tests.helpers.tiny import smallest_mae

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS = 3
# The README's default command (digits, the default preset), on small settings.
COMMAND = [
    os.path.join(ROOT, "examples", "pretrain.py"),
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "16",
    "--probe-epochs",
    "0",  # the probe, which nothing here compares, skipped
    "--image-every",
    "100",
    "--verbose",
    "2",
]


class Run:
    """The command in a subprocess, its output lines timestamped as they arrive."""

    def __init__(self, output_dir):
        env = dict(
            os.environ,
            KERAS_BACKEND=keras.backend.backend(),
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        self.process = subprocess.Popen(
            [sys.executable, *COMMAND, "--output-dir", str(output_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))

    def time_of(self, prefix):
        """When a line starting with `prefix` arrived, or None."""
        return next((t for t, line in list(self.lines) if line.startswith(prefix)), None)

    def wait_for(self, prefix, timeout=600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            arrived = self.time_of(prefix)
            if arrived is not None or self.process.poll() is not None:
                return arrived if arrived is not None else self.time_of(prefix)
            time.sleep(0.01)
        return None

    def sleep_until(self, moment):
        while time.monotonic() < moment and self.process.poll() is None:
            time.sleep(0.005)

    def finish(self, timeout=600):
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=60)
        return "".join(line for _, line in self.lines)


def final_state(output_dir):
    """The last checkpoint's arrays and the saved model's weights."""
    with np.load(os.path.join(output_dir, "checkpoint", "variables.npz")) as arrays:
        state = {name: arrays[name] for name in arrays.files if name != "state/json"}
    mae = keras.models.load_model(os.path.join(output_dir, "mae.keras"), compile=False)
    for i, weight in enumerate(mae.get_weights()):
        state[f"mae.keras/{i}"] = weight
    return state


def assert_bit_identical(got, want, context):
    assert sorted(got) == sorted(want), context
    different = [name for name in sorted(want) if not np.array_equal(got[name], want[name])]
    worst = {
        name: float(np.max(np.abs(got[name].astype("float64") - want[name].astype("float64"))))
        for name in different
        if got[name].dtype.kind == "f"
    }
    assert not different, (
        f"{context}: {len(different)} arrays differ, e.g. {worst or different[:5]}"
    )


@pytest.mark.serial
def test_killed_pretraining_command_resumes_bit_identical(tmp_path):
    assert keras_mae  # registers the classes mae.keras needs
    reference_dir = tmp_path / "reference"
    reference = Run(reference_dir)
    output = reference.finish()
    assert reference.process.returncode == 0, output[-3000:]
    epoch_seconds = reference.time_of(f"Epoch {EPOCHS}/") - reference.time_of("Epoch 2/")

    # A random moment of epochs 2..EPOCHS (after the first checkpoint, so that the
    # re-run resumes), in units of epochs: u in [1, EPOCHS). The first whole epoch
    # is measured on this run's own clock (a busy machine runs slower or faster).
    seed = random.SystemRandom().randrange(2**32)
    u = random.Random(seed).uniform(1.0, EPOCHS)
    resumed_dir = tmp_path / "resumed"
    killed = Run(resumed_dir)
    begun = killed.wait_for("Epoch 2/")
    assert begun is not None, killed.finish()[-3000:]
    moment = begun + (u - 1.0) * epoch_seconds
    next_epoch = None
    if u < 2.0:  # unless this run's epoch 2 ends first: then its own clock decides
        while time.monotonic() < moment and killed.process.poll() is None:
            next_epoch = killed.time_of("Epoch 3/")
            if next_epoch is not None:
                moment = next_epoch + (u - 1.0) * 0.9 * (next_epoch - begun)
                break
            time.sleep(0.005)
    else:
        third = killed.wait_for(f"Epoch {int(u) + 1}/")
        assert third is not None, killed.finish()[-3000:]
        own_epoch = (third - begun) / (int(u) - 1)
        moment = third + (u - int(u)) * 0.9 * own_epoch
    killed.sleep_until(moment)
    killed.process.send_signal(signal.SIGKILL)
    output = killed.finish()
    context = (
        f"backend {keras.backend.backend()}, kill seed {seed}: SIGKILL at epoch position "
        f"{u:.3f}, {time.monotonic() - begun:.2f} s after epoch 2 began (reference epoch: "
        f"{epoch_seconds:.2f} s)"
    )
    assert killed.process.returncode == -signal.SIGKILL, (
        f"{context}: the run ended ({killed.process.returncode}) before the kill\n{output[-2000:]}"
    )
    assert "pre-training:" not in output, context

    resumed = Run(resumed_dir)
    output = resumed.finish()
    assert resumed.process.returncode == 0, f"{context}\n{output[-3000:]}"
    assert "resuming from" in output, f"{context}\n{output[-3000:]}"
    assert not [n for n in os.listdir(resumed_dir / "checkpoint") if n.startswith(".")], context
    got, want = final_state(resumed_dir), final_state(reference_dir)
    assert_bit_identical(got, want, context)


# In-process: the tf.data paths (an image folder, a tfds split) resume exactly too.


tiny_mae = smallest_mae


class StopInEpoch(keras.callbacks.Callback):
    """Dies in the middle of epoch `epoch` (after its checkpoint-less batches)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.stop = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.stop:
            raise KeyboardInterrupt


def pretrain_state(directory, source, callbacks=None):
    from keras_mae.recipes.pretrain import pretrain

    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    mae = tiny_mae()
    pretrain(
        mae,
        source,
        epochs=3,
        batch_size=4,
        base_learning_rate=0.32,
        warmup_epochs=1,
        output_dir=str(directory),
        verbose=0,
        callbacks=callbacks,
        seed=5,
    )
    return [keras.ops.convert_to_numpy(v) for v in mae.variables + mae.optimizer.variables]


def assert_resumes_exactly(tmp_path, source):
    want = pretrain_state(tmp_path / "reference", source)
    with pytest.raises(KeyboardInterrupt):
        pretrain_state(tmp_path / "resumed", source, [StopInEpoch(1, 1)])
    got = pretrain_state(tmp_path / "resumed", source)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"variable {i}")


def write_folder(root, count=16):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 9), dtype=np.uint8)).save(folder / f"{i}.png")


def test_folder_source_resumes_bit_identical(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("PIL")
    from keras_mae.data import load_source

    write_folder(tmp_path / "images")
    source = load_source(f"folder:{tmp_path / 'images'}", "train")
    assert_resumes_exactly(tmp_path, source)


def test_tfds_source_resumes_bit_identical(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from keras_mae.data import load_source

    with tfds.testing.mock_data(num_examples=16):
        source = load_source("tfds:mnist", "train")
        assert len(source) == 16
        assert_resumes_exactly(tmp_path, source)
