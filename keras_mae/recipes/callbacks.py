"""Training callbacks: resumable epoch checkpoints, a non-finite-loss stop, pictures.

Resuming, in three lines (the same code starts a run and continues a killed one):

    initial_epoch = restore_checkpoint(model, checkpoint_dir)  # 0 if none yet
    dataset, steps = train_dataset(..., epochs=epochs, initial_epoch=initial_epoch)
    model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps, callbacks=[EpochCheckpoint(checkpoint_dir)])

A checkpoint holds every model variable (weights, fixed tables and the masking
seed state), every optimizer variable (iteration count, moments, accumulated
gradients) and the number of completed epochs, written atomically at the end
of each epoch.
"""

import importlib.util
import json
import math
import os
import time

import keras
import numpy as np

STATE_FILE = "state.json"
VARIABLES_FILE = "variables.npz"


def _values(variables):
    return {f"{i:06d}": np.asarray(keras.ops.convert_to_numpy(v)) for i, v in enumerate(variables)}


def save_checkpoint(model, directory, epoch):
    """Write model and optimizer variables and `epoch` (epochs completed) atomically."""
    os.makedirs(directory, exist_ok=True)
    arrays = {f"model/{k}": v for k, v in _values(model.variables).items()}
    if model.optimizer is not None and model.optimizer.built:
        arrays.update({f"optimizer/{k}": v for k, v in _values(model.optimizer.variables).items()})
    tmp = os.path.join(directory, VARIABLES_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(directory, VARIABLES_FILE))
    state = {
        "epoch": int(epoch),
        "model_variables": len(model.variables),
        "optimizer_variables": len(model.optimizer.variables) if model.optimizer else 0,
    }
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(directory, STATE_FILE))


def checkpoint_epoch(directory):
    """Completed epochs recorded in `directory`, or 0 when there is no checkpoint."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def restore_checkpoint(model, directory):
    """Load the last checkpoint of `directory` into a compiled `model`.

    Builds the optimizer first so its state (iterations, moments) can be
    restored. Returns the number of completed epochs, the `initial_epoch` to
    pass to `fit` (0 when there is no checkpoint, leaving the model as is).
    """
    if not os.path.exists(os.path.join(directory, STATE_FILE)):
        return 0
    with open(os.path.join(directory, STATE_FILE)) as f:
        state = json.load(f)
    arrays = np.load(os.path.join(directory, VARIABLES_FILE))
    if state["model_variables"] != len(model.variables):
        raise ValueError(
            f"the checkpoint in {directory!r} holds {state['model_variables']} model "
            f"variables but this model has {len(model.variables)}: it was written by a "
            "different architecture. Use another --output-dir or the same settings."
        )
    for i, variable in enumerate(model.variables):
        variable.assign(arrays[f"model/{i:06d}"])
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
        for i, variable in enumerate(model.optimizer.variables):
            variable.assign(arrays[f"optimizer/{i:06d}"])
    return int(state["epoch"])


class EpochCheckpoint(keras.callbacks.Callback):
    """Save a resumable checkpoint to `directory` at the end of every epoch.

    Args:
        directory: str; see `restore_checkpoint`.
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.model, self.directory, epoch + 1)


class NonFiniteLossError(RuntimeError):
    pass


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training with a clear error the first time the loss is NaN or infinite.

    The epoch's checkpoint is not written, so a resumed run restarts from the
    last finite epoch (after, say, lowering the learning rate).
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"the training loss became {float(loss)} at epoch {self.epoch + 1}, "
                f"batch {batch + 1}; stopping. Lower the learning rate (or lengthen "
                "warmup), check that the inputs are finite and normalised, or use "
                "float32 instead of float16. The last checkpoint holds the last "
                "finite epoch."
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


def installed(module):
    """Whether `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def pretraining_callbacks(
    output_dir, held_out_images=None, mean=None, std=None, image_every=10, tensorboard=True
):
    """The callbacks of a resumable pre-training run writing into `output_dir`.

    `output_dir/checkpoint/` (every epoch; `restore_checkpoint` reads it),
    `output_dir/reconstruction_epoch_XXXX.png` (every `image_every` epochs and
    at the end, when `held_out_images` are given), `output_dir/logs/`
    (TensorBoard) and a stop with a clear message on a non-finite loss.
    """
    callbacks = [StopOnNonFiniteLoss(), EpochCheckpoint(os.path.join(output_dir, "checkpoint"))]
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
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")))
    return callbacks
