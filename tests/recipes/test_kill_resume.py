"""The README's pre-training command, killed with SIGKILL at a random moment and
run again, ends bit-identical to a run that was never interrupted: every model
variable (weights, masking seed state), every optimizer variable (step count,
moments) and the host's random states, on the backend of this test process.

The uninterrupted run and the run to be killed overlap (under JAX the second
starts once the first has compiled its steps into the runs' shared compilation
cache); the kill moment is a random step of epochs 2..EPOCHS counted on the
killed run's own progress bar, so a busy machine moves it in time but not in
the run.

Then the other data paths, in this process: a tf.data folder source and a tfds
source resume to the same bits as well."""

import os
import random
import re
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
# The README's default command (digits, the default preset), on small settings;
# --verbose 1 prints the step count as it goes, the clock of the kill.
COMMAND = [
    os.path.join(ROOT, "examples", "pretrain.py"),
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "16",
    "--probe-epochs",
    "0",
    "--image-every",
    "100",
    "--verbose",
    "1",
]
COLOURS = re.compile(r"\x1b\[[0-9;]*m")
EPOCH_LINE = re.compile(r"Epoch (\d+)/\d+$")
PROGRESS = re.compile(r"\s*(\d+)/(\d+) ")  # Keras' bar: "12/89 ━━━ ..."


class Run:
    """The command in a subprocess; its output and its position (epoch, step) as they arrive."""

    def __init__(self, output_dir, compilation_cache):
        env = dict(
            os.environ,
            KERAS_BACKEND=keras.backend.backend(),
            TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        if keras.backend.backend() == "jax":
            # The three runs compile the same steps: JAX's persistent cache compiles
            # them once (the cached executables give the same bits).
            env["JAX_COMPILATION_CACHE_DIR"] = str(compilation_cache)
            env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        if keras.backend.backend() == "torch":
            # Two runs at once: torch's spinning OpenMP threads, two per run on two
            # cores, slow both by a factor of ten; one thread each (the same for every
            # run, so the same bits).
            env["OMP_NUM_THREADS"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, *COMMAND, "--output-dir", str(output_dir)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
        )
        self.chunks = []
        self.epoch, self.step, self.steps = 0, 0, None  # 1-based epoch, steps done in it
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        # Raw chunks, not lines: a bar update ends without a newline until the next one.
        line = ""
        while chunk := os.read(self.process.stdout.fileno(), 1 << 16):
            text = chunk.decode(errors="replace")
            self.chunks.append(text)
            for piece in re.split(r"([\r\n])", text):
                if piece in ("\r", "\n"):
                    line = ""
                    continue
                line += piece
                self.parse(COLOURS.sub("", line))

    def parse(self, line):
        epoch = EPOCH_LINE.match(line)
        if epoch:
            self.epoch, self.step = int(epoch.group(1)), 0
            return
        progress = PROGRESS.match(line)
        if progress and self.epoch:
            self.step, self.steps = int(progress.group(1)), int(progress.group(2))

    def wait_until(self, epoch, step, timeout=600):
        """Return once the run reports `step` steps done in `epoch` (or later), or ends."""
        deadline = time.monotonic() + timeout
        while (self.epoch, self.step) < (epoch, step) and self.process.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        return self.epoch, self.step

    def finish(self, timeout=600):
        try:
            self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=60)
        return "".join(self.chunks)


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
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    cache = tmp_path / "compilation_cache"
    reference = Run(reference_dir, cache)
    if keras.backend.backend() == "jax":
        reference.wait_until(2, 0)  # its steps are compiled and cached
    killed = Run(resumed_dir, cache)  # while the reference trains: imports take long

    # A random moment of epochs 2..EPOCHS (after the first checkpoint, so that the
    # re-run resumes), in units of epochs: u in [1, EPOCHS), as a step of the
    # killed run: step 1 to steps - 2 of epoch int(u) + 1, so that the kill
    # lands inside training even with one progress update of delay.
    seed = random.SystemRandom().randrange(2**32)
    u = random.Random(seed).uniform(1.0, EPOCHS)
    epoch = int(u) + 1
    killed.wait_until(2, 1)
    steps = killed.steps
    assert steps and steps > 2, f"kill seed {seed}: no progress bar\n{killed.finish()[-3000:]}"
    step = 1 + int((u - int(u)) * (steps - 2))
    at = killed.wait_until(epoch, step)
    killed.process.send_signal(signal.SIGKILL)
    output = killed.finish()
    context = (
        f"backend {keras.backend.backend()}, kill seed {seed}: SIGKILL at epoch position "
        f"{u:.3f} (epoch {epoch}, step {step} of {steps}), after the run reported epoch "
        f"{at[0]}, step {at[1]}"
    )
    assert killed.process.returncode == -signal.SIGKILL, (
        f"{context}: the run ended ({killed.process.returncode}) before the kill\n{output[-2000:]}"
    )
    assert "pre-training:" not in output, context

    resumed = Run(resumed_dir, cache)
    output = resumed.finish()
    assert resumed.process.returncode == 0, f"{context}\n{output[-3000:]}"
    resumed_after = re.search(r"resuming from \S+ after epoch (\d+)", output)
    assert resumed_after, f"{context}\n{output[-3000:]}"
    assert 1 <= int(resumed_after.group(1)) <= epoch, f"{context}\n{output[-3000:]}"
    assert not [n for n in os.listdir(resumed_dir / "checkpoint") if n.startswith(".")], context
    output = reference.finish()
    assert reference.process.returncode == 0, output[-3000:]
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
