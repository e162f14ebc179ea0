"""Training callbacks: resumable epoch checkpoints, a non-finite-loss stop, pictures.

Resuming, in three lines (the same code starts a run and continues a killed one):

    initial_epoch = restore_checkpoint(model, checkpoint_dir)  # 0 if none yet
    dataset, steps = train_dataset(..., epochs=epochs, initial_epoch=initial_epoch)
    model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps, callbacks=[EpochCheckpoint(checkpoint_dir)])

A checkpoint is one file, `variables.npz`: every model variable (weights, fixed
tables and every `SeedGenerator` state: masking, augmentation, drop path),
every optimizer variable (iteration count, moments, accumulated gradients),
the host's global random states (`keras_mae.data.host_rng`), the number of
completed epochs and the settings of the run that wrote it, together, so they
can never disagree. `state.json` beside it is a readable copy of the epoch and
settings, written after it; only old checkpoints without the state inside the
npz are read from it.

Writes are atomic: into a temporary file in the same directory, flushed and
fsynced, then renamed over the old one. A failed write (a full disk) removes
its temporary file and raises `CheckpointWriteError` naming the path and the
cause; the previous checkpoint is left intact, and a temporary file left by a
killed write is ignored (and removed by the next write). `save_model_atomically`
writes `.keras` files the same way.
"""

import importlib.util
import json
import math
import os
import tempfile
import threading
import time
import zipfile

import keras
import numpy as np

from keras_mae import kernels
from keras_mae.data.host_rng import host_rng_state
from keras_mae.data.host_rng import set_host_rng_state

STATE_FILE = "state.json"
VARIABLES_FILE = "variables.npz"
STATE_KEY = "state/json"
TEMPORARY_SUFFIX = ".tmp"
# Temporary names of earlier releases' writer, removed like today's.
OLD_TEMPORARY_FILES = (VARIABLES_FILE + ".tmp.npz", STATE_FILE + ".tmp")


class CheckpointWriteError(OSError):
    """A checkpoint or model file could not be written; the previous one is intact."""


def _values(variables):
    return {f"{i:06d}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}


def _reason(error):
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def is_temporary_file(name, names=(VARIABLES_FILE, STATE_FILE)):
    """Whether `name` is what an atomic write of one of `names` leaves when killed."""
    if name in OLD_TEMPORARY_FILES:
        return True
    return any(
        name.startswith(f".{target}.") and name.endswith((TEMPORARY_SUFFIX, ".tmp.keras"))
        for target in names
    )


def remove_temporary_files(directory, names=(VARIABLES_FILE, STATE_FILE)):
    """Remove what a killed atomic write of `names` left in `directory` (never a
    finished file)."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if is_temporary_file(name, names):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path, write, what, recovery):
    """`write(file)` into a temporary file beside `path`, fsync, rename over `path`.

    On any failure the temporary file is removed and `path` keeps its previous
    content; an `OSError` becomes a `CheckpointWriteError` that names `path`,
    the cause, and `recovery` (what is still intact and what to do).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path) + ".", suffix=TEMPORARY_SUFFIX, dir=directory
        )
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)
    except OSError as error:
        raise CheckpointWriteError(
            f"could not write the {what} to {path!r} ({_reason(error)}): free space on that "
            f"disk (or fix its permissions) or use another --output-dir; {recovery}"
        ) from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def save_model_atomically(model, path, recovery="run the same command again to write it."):
    """`model.save(path)` (a `.keras` file) through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}-{time.time_ns()}.tmp.keras"
    )
    try:
        model.save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    except OSError as error:
        raise CheckpointWriteError(
            f"could not write the model to {path!r} ({_reason(error)}): free space on that "
            f"disk (or fix its permissions) or use another --output-dir; {recovery}"
        ) from error
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(model, directory, epoch, settings=None):
    """Write model and optimizer variables, host random states, `epoch` (epochs
    completed) and `settings` (JSON-able) atomically, as one file."""
    os.makedirs(directory, exist_ok=True)
    remove_temporary_files(directory)
    previous = read_checkpoint_state(directory, missing_ok=True)
    arrays = {f"model/{k}": v for k, v in _values(model.variables).items()}
    optimizer_variables = []
    if model.optimizer is not None and model.optimizer.built:
        optimizer_variables = model.optimizer.variables
        arrays.update({f"optimizer/{k}": v for k, v in _values(optimizer_variables).items()})
    arrays.update({f"rng/{k}": v for k, v in host_rng_state().items()})
    state = {
        "epoch": int(epoch),
        "model_variables": len(model.variables),
        "optimizer_variables": len(optimizer_variables),
        "settings": settings,
    }
    arrays[STATE_KEY] = np.asarray(json.dumps(state))
    if previous:
        recovery = (
            f"the last good checkpoint (epoch {previous['epoch']}) is intact: run the "
            "same command again to resume from it."
        )
    else:
        recovery = "there is no earlier checkpoint: the run starts afresh when run again."
    path = os.path.join(directory, VARIABLES_FILE)
    write_atomically(path, lambda f: np.savez(f, **arrays), "checkpoint", recovery)
    # A readable copy; the npz above is what is read back.
    text = json.dumps(state, indent=1).encode()
    write_atomically(
        os.path.join(directory, STATE_FILE),
        lambda f: f.write(text),
        "checkpoint's readable state",
        f"the checkpoint of epoch {epoch} itself is written ({path!r}) and resumes.",
    )


def read_checkpoint_state(directory, missing_ok=True):
    """The state of the checkpoint in `directory` (`epoch`, variable counts,
    `settings`, None for checkpoints of earlier releases), or None without one."""
    path = os.path.join(directory, VARIABLES_FILE)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(directory, STATE_FILE)) and not missing_ok:
            raise FileNotFoundError(
                f"{os.path.join(directory, STATE_FILE)!r} has no {VARIABLES_FILE} beside it: "
                "the checkpoint is incomplete. Delete the directory or use another --output-dir."
            )
        return None
    try:
        with np.load(path) as arrays:
            if STATE_KEY in arrays.files:
                return json.loads(str(arrays[STATE_KEY]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"the checkpoint {path!r} cannot be read ({error}); it was not written by this "
            "version's atomic writer. Delete it to start afresh, or use another --output-dir."
        ) from error
    # An earlier release's checkpoint: the state is in state.json.
    with open(os.path.join(directory, STATE_FILE)) as f:
        state = json.load(f)
    state.setdefault("settings", None)
    return state


def checkpoint_epoch(directory):
    """Completed epochs recorded in `directory`, or 0 when there is no checkpoint."""
    state = read_checkpoint_state(directory)
    return int(state["epoch"]) if state else 0


def _assign(variables, arrays, prefix, directory):
    for i, variable in enumerate(variables):
        value = arrays[f"{prefix}/{i:06d}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{prefix} variable {i} ({variable.path}) has shape {tuple(variable.shape)} but "
                f"the checkpoint in {directory!r} holds {tuple(value.shape)}: it was written by "
                "a different architecture. Use another --output-dir or the same settings."
            )
        variable.assign(value)


def restore_checkpoint(model, directory):
    """Load the last checkpoint of `directory` into a compiled `model`.

    Builds the optimizer first so its state (iterations, moments) can be
    restored, and restores the host's global random states. Returns the
    number of completed epochs, the `initial_epoch` to pass to `fit` (0 when
    there is no checkpoint, leaving the model as is).
    """
    remove_temporary_files(directory)
    state = read_checkpoint_state(directory, missing_ok=False)
    if state is None:
        return 0
    if state["model_variables"] != len(model.variables):
        raise ValueError(
            f"the checkpoint in {directory!r} holds {state['model_variables']} model "
            f"variables but this model has {len(model.variables)}: it was written by a "
            "different architecture. Use another --output-dir or the same settings."
        )
    if state["optimizer_variables"]:
        if model.optimizer is None:
            raise ValueError("compile the model before restoring a checkpoint.")
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        if state["optimizer_variables"] != len(model.optimizer.variables):
            raise ValueError(
                f"the checkpoint in {directory!r} holds {state['optimizer_variables']} "
                f"optimizer variables but this optimizer has "
                f"{len(model.optimizer.variables)}: compile with the same optimizer "
                "settings (e.g. gradient accumulation) to resume."
            )
    with np.load(os.path.join(directory, VARIABLES_FILE)) as arrays:
        _assign(model.variables, arrays, "model", directory)
        if state["optimizer_variables"]:
            _assign(model.optimizer.variables, arrays, "optimizer", directory)
        rng = _host_rng(arrays)
    set_host_rng_state(rng)
    return int(state["epoch"])


def _host_rng(arrays):
    return {name[len("rng/") :]: arrays[name] for name in arrays.files if name.startswith("rng/")}


class ResumeHostRandomState(keras.callbacks.Callback):
    """Restore the checkpoint's host random states as the resumed run's first batch begins.

    `restore_checkpoint` restores them before `fit`, but `fit` draws from them
    while it sets up: Keras' torch trainer takes a seed from torch's global
    generator when it opens its data iterator, after `on_epoch_begin`. The
    pre-training streams hold every remaining epoch in one iterator
    (`steps_per_epoch` given), so an uninterrupted run opens it once, at its
    start, and draws nothing between one epoch's checkpoint and the next
    epoch's first batch. Restoring again at that first batch puts every
    generator where the uninterrupted run had it there. Every process of a
    distributed run takes this callback.

    Args:
        directory: str, the checkpoint directory.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory
        self.epoch = None
        self.done = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.done:
            return
        self.done = True
        state = read_checkpoint_state(self.directory)
        if state is None or int(state["epoch"]) != self.epoch or batch != 0:
            return  # a fresh run, or not the first batch after the checkpoint
        with np.load(os.path.join(self.directory, VARIABLES_FILE)) as arrays:
            set_host_rng_state(_host_rng(arrays))


class EpochCheckpoint(keras.callbacks.Callback):
    """Save a resumable checkpoint to `directory` at the end of every epoch.

    Args:
        directory: str; see `restore_checkpoint`.
        settings: optional JSON-able dict recorded in every checkpoint (what
            decided the run's result; `keras_mae.recipes.pretrain` compares it
            before resuming).
    """

    def __init__(self, directory, settings=None):
        super().__init__()
        self.directory = directory
        self.settings = settings

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.model, self.directory, epoch + 1, self.settings)


class NonFiniteLossError(RuntimeError):
    pass


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training with a clear error the first time the loss is NaN or infinite,
    naming the cause: the batch's images, or the training itself.

    The epoch's checkpoint is not written, so a resumed run restarts from the
    last finite epoch (after, say, lowering the learning rate). Each batch's
    loss is checked once it has reached the host (`kernels.host_copy`), never
    by waiting for the device mid-epoch: on a GPU the error comes a step or
    two after the batch it names, and at the latest at the epoch's end,
    before any checkpoint callback listed after this one.

    It is `async_safe`: Keras may call its batch hook on worker threads, and
    then reads the step's logs there, not in the training loop (a lock keeps
    the pending losses; an error raised there reaches `fit` at the next step
    or the epoch's end).

    Args:
        batch_images: optional callable `(epoch, batch) -> images` giving a
            training batch's images again (the recipes' data is a function of
            `(seed, epoch)`); called once, after the loss became non-finite,
            to say whether that batch's images held non-finite values. Without
            it the message asks to check them.
    """

    async_safe = True

    def __init__(self, batch_images=None):
        super().__init__()
        self.batch_images = batch_images
        self.lock = threading.Lock()
        self.pending = []

    def on_epoch_begin(self, epoch, logs=None):
        with self.lock:
            self.epoch = epoch
            self.pending = []

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        with self.lock:
            if loss is not None:
                self.pending.append((batch, kernels.host_copy(loss)))
                self.pending.sort(key=lambda item: item[0])  # threads may finish out of order
            self.check(wait=False)

    def on_epoch_end(self, epoch, logs=None):
        with self.lock:
            self.check(wait=True)

    def check(self, wait):
        while self.pending and (wait or self.pending[0][1].ready()):
            batch, copy = self.pending.pop(0)
            loss = float(copy.value())
            if not math.isfinite(loss):
                self.pending = []
                raise NonFiniteLossError(self.message(loss, batch))

    def non_finite_inputs(self, batch):
        """`(non-finite values, values)` in the images of `batch`, or None if unknown."""
        if self.batch_images is None:
            return None
        images = self.batch_images(self.epoch, batch)
        if images is None:
            return None
        values = np.asarray(keras.ops.convert_to_numpy(images))
        if not np.issubdtype(values.dtype, np.floating):
            return 0, values.size
        return int(np.sum(~np.isfinite(values))), values.size

    def message(self, loss, batch):
        where = f"the training loss became {loss} at epoch {self.epoch + 1}, batch {batch + 1}"
        resume = "The last checkpoint holds the last finite epoch."
        diverged = (
            "Lower the learning rate (or lengthen warmup), or use float32 instead of "
            "float16; then run again."
        )
        counts = self.non_finite_inputs(batch)
        if counts is None:
            return (
                f"{where}; stopping. Check that batch's images for NaN or inf "
                "(np.isfinite(images).all()): damaged data makes the loss non-finite "
                f"at once. If they are finite, the training diverged: {diverged} {resume}"
            )
        bad, size = counts
        if bad:
            return (
                f"{where}; stopping. That batch's images hold {bad} non-finite "
                f"value(s) (NaN or inf) out of {size}: the data is the cause, not the "
                "learning rate. Find and drop or repair the damaged images (e.g. keep "
                "images[np.isfinite(images).all(axis=(1, 2, 3))]), then run again. " + resume
            )
        return (
            f"{where}; stopping. That batch's images are finite: the training "
            f"diverged. {diverged} {resume}"
        )


class ReconstructionImages(keras.callbacks.Callback):
    """Write a PNG of original | masked | reconstruction every `every` epochs.

    Args:
        images: a few held-out model inputs `(N, H, W, C)` (raw, if the model
            has an augmentation: the pictures show them after it).
        directory: str, PNGs are `directory/reconstruction_epoch_XXXX.png`.
        mean, std: the normalisation of the model's inputs on the [0, 1] scale,
            undone for the picture.
        every: int, epochs between pictures. Defaults to 10.
        scale: int, upscaling of each tile. Defaults to 4.
        seed: int, the masking noise, fixed so pictures are comparable.

    With `norm_pix_loss` the prediction is un-normalised with the statistics
    of the visible patches (`MaskedAutoencoder.reconstruct`).
    """

    def __init__(self, images, directory, mean, std, every=10, scale=4, seed=0):
        super().__init__()
        self.images = np.asarray(images)
        self.directory = directory
        self.mean = np.asarray(mean, "float32")
        self.std = np.asarray(std, "float32")
        self.every = every
        self.scale = scale
        self.seed = seed

    def write(self, path):
        from keras_mae.recipes.visualization import reconstruction_grid
        from keras_mae.recipes.visualization import write_png

        noise = (
            np.random.default_rng(self.seed)
            .random((len(self.images), self.model.num_patches))
            .astype("float32")
        )
        grid = reconstruction_grid(
            self.model, self.images, noise, self.mean, self.std, scale=self.scale, grey=True
        )
        write_png(path, grid)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.params.get("epochs"):
            os.makedirs(self.directory, exist_ok=True)
            self.write(os.path.join(self.directory, f"reconstruction_epoch_{epoch + 1:04d}.png"))


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that ends past `minutes`.

    The epoch's checkpoint is written as usual, so the run can be resumed
    later with a larger budget.

    Args:
        minutes: float; 0 or None means no limit.
    """

    def __init__(self, minutes):
        super().__init__()
        self.minutes = minutes

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.minutes and time.time() - self.start > 60 * self.minutes:
            print(
                f"time limit of {self.minutes} min reached after epoch {epoch + 1}: stopping",
                flush=True,
            )
            self.model.stop_training = True


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' `TensorBoard` callback, writing the epoch logs only (`update_freq`
    "epoch", no profiling, no graph), with per-step hooks that do nothing.

    Keras reads every step's logs in the training loop (a wait for the device)
    when a callback with a per-step hook is not `async_safe`; this one is.
    """

    async_safe = True

    def __init__(self, log_dir):
        super().__init__(log_dir, write_graph=False, update_freq="epoch", profile_batch=0)

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


def installed(module):
    """Whether `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pretraining_callbacks(
    output_dir,
    held_out_images=None,
    mean=None,
    std=None,
    image_every=10,
    tensorboard=True,
    settings=None,
    batch_images=None,
):
    """The callbacks of a resumable pre-training run writing into `output_dir`.

    `output_dir/checkpoint/` (every epoch; `restore_checkpoint` reads it),
    `output_dir/reconstruction_epoch_XXXX.png` (every `image_every` epochs and
    at the end, when `held_out_images` are given), `output_dir/logs/`
    (TensorBoard) and a stop with a clear message on a non-finite loss;
    `settings` are recorded in every checkpoint; `batch_images(epoch, batch)`,
    if given, lets the non-finite-loss stop look at the batch's images.
    """
    checkpoint = os.path.join(output_dir, "checkpoint")
    callbacks = [
        ResumeHostRandomState(checkpoint),
        StopOnNonFiniteLoss(batch_images),
        EpochCheckpoint(checkpoint, settings),
    ]
    if held_out_images is not None:
        channels = np.shape(held_out_images)[-1]
        mean = (0.0,) * channels if mean is None else mean
        std = (1.0,) * channels if std is None else std
        callbacks.append(
            ReconstructionImages(held_out_images, output_dir, mean, std, every=image_every)
        )
    if tensorboard:
        # keras.callbacks.TensorBoard writes through tensorflow.summary on every backend.
        missing = [m for m in ("tensorflow", "tensorboard") if not installed(m)]
        if missing:
            print(
                f"TensorBoard logs skipped: Keras' TensorBoard callback needs "
                f"{' and '.join(missing)} (pip install tensorflow tensorboard)."
            )
        else:
            callbacks.append(EpochTensorBoard(os.path.join(output_dir, "logs")))
    return callbacks
