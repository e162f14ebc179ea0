"""MAE pre-training as one resumable function over Keras' `fit`.

The official recipe (`main_pretrain.py`): AdamW (0.9, 0.95), weight decay 0.05
(none on biases and norms), `lr = base_lr x effective batch / 256` with
per-step linear warmup then a half-cosine to 0, base lr 1.5e-4, 40 warmup
epochs, 800 epochs; RandomResizedCrop (0.2-1) + flip + normalisation.

Data:
- a source from `keras_mae.data.load_source` (or an `ArraySource`): the tf.data
  pipeline crops, flips and normalises; each epoch's batches depend only on
  `(seed, epoch)`, so a resumed run sees the batches an uninterrupted one sees.
- in-memory images (a numpy array, or `(images, labels)`; labels are ignored):
  fed to `fit` as they are, shuffled by Keras each epoch; augmentation, if any,
  is the model's own (`MaskedAutoencoder(augmentation=...)`), inside the step.
  A resumed run continues weights, optimizer and schedule exactly; its data
  order is a new shuffle.

Resume: every epoch ends with a checkpoint in `output_dir/checkpoint`
(`keras_mae.recipes.callbacks`); calling `pretrain` again with the same
arguments continues after the last completed epoch.
"""

import math
import os
import time

import numpy as np

from keras_mae.data.arrays import is_arrays
from keras_mae.data.statistics import default_mean_std
from keras_mae.recipes.callbacks import checkpoint_epoch
from keras_mae.recipes.callbacks import pretraining_callbacks
from keras_mae.recipes.callbacks import restore_checkpoint
from keras_mae.recipes.optimizers import pretraining_optimizer
from keras_mae.recipes.schedules import scaled_learning_rate
from keras_mae.recipes.schedules import warmup_cosine_for


def training_images(train_data):
    """The images of in-memory `train_data` (an array, or `(images, labels)`), or None."""
    if is_arrays(train_data):
        return np.asarray(train_data[0])
    if hasattr(train_data, "shape") and len(train_data.shape) == 4:
        return np.asarray(train_data)
    return None


def pretrain(
    mae,
    train_data,
    epochs=800,
    batch_size=256,
    base_learning_rate=1.5e-4,
    warmup_epochs=40,
    weight_decay=0.05,
    accumulation_steps=None,
    output_dir=None,
    held_out_images=None,
    mean=None,
    std=None,
    image_every=10,
    validation_data=None,
    seed=0,
    verbose=2,
    callbacks=None,
    run=None,
):
    """Pre-train `mae` on `train_data`, resumably; save `mae.keras` and `encoder.keras`.

    Compiles `mae` with the official optimizer and schedule, restores the last
    checkpoint of `output_dir` when there is one, fits the remaining epochs with
    the pre-training callbacks (per-epoch checkpoint, a stop on a non-finite
    loss, reconstruction pictures, TensorBoard), then saves the model and its
    encoder.

    Args:
        mae: a `keras_mae.MaskedAutoencoder` (compiled here).
        train_data: a `keras_mae.data.load_source` source, or in-memory images
            `(N, H, W, C)` (or `(images, labels)`); see the module docstring.
        epochs: int, the run's total epochs (also when resuming). Defaults to 800.
        batch_size: int, images per step (the global batch under a
            distribution). Defaults to 256.
        base_learning_rate: float; the peak lr is `base_learning_rate x
            batch_size x accumulation_steps / 256`. Defaults to 1.5e-4.
        warmup_epochs: float, epochs of linear warmup. Defaults to 40.
        weight_decay: float. Defaults to 0.05.
        accumulation_steps: int >= 2 or None; gradient accumulation, so the
            effective batch is `batch_size x accumulation_steps`.
        output_dir: str or None; `checkpoint/`, `logs/`, reconstruction PNGs,
            `mae.keras` and `encoder.keras` go there. None writes nothing (and
            cannot resume).
        held_out_images: optional few model inputs (as `train_data` gives them
            to the model) for the reconstruction pictures.
        mean, std: the normalisation on the [0, 1] scale. For sources it is
            applied by the pipeline (default: ImageNet's for RGB, 0.5 for grey);
            for in-memory images it is the model augmentation's, used here only
            to draw the pictures (default: none).
        image_every: int, epochs between reconstruction pictures. Defaults to 10.
        validation_data: optional held-out data for `fit` (e.g. `(images,)`).
        seed: int, seed of the tf.data stream. Defaults to 0.
        verbose: Keras `fit` verbosity. Defaults to 2 (one line per epoch).
        callbacks: optional extra Keras callbacks.
        run: optional object with `fit(model, x, batch_size, epochs, ...)`, e.g.
            what `keras_mae.distribute.runner.start` returns; defaults to plain
            `mae.fit`.

    Returns:
        A dict: `"initial_epoch"` (epochs done before this call), `"epochs"`
        (epochs done after it), `"seconds"`, `"steps_per_epoch"`,
        `"peak_learning_rate"`, `"history"` (Keras' history of this call) and,
        when it trained, `"first_loss"` and `"last_loss"`.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be 0 or more. Received: epochs={epochs}")
    images = training_images(train_data)
    if images is None and not hasattr(train_data, "num_classes"):
        raise TypeError(
            "train_data must be in-memory images (N, H, W, C), (images, labels), or a "
            "source from keras_mae.data.load_source. Received: "
            f"{type(train_data).__name__}"
        )
    if images is not None:
        if len(images) < batch_size:
            raise ValueError(
                f"{len(images)} training images are fewer than one batch of {batch_size}: "
                "lower the batch size."
            )
        steps = math.ceil(len(images) / batch_size)  # Keras keeps the last partial batch
    else:
        if getattr(mae, "augmentation", None) is not None:
            raise ValueError(
                "the tf.data pipeline already crops, flips and normalises a source; "
                "build the MaskedAutoencoder without augmentation to train on it, or "
                "give in-memory images."
            )
        if mean is None or std is None:
            mean, std = default_mean_std(mae.image_shape[-1])  # the pipeline's default
        steps = len(train_data) // batch_size
        if steps < 1:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {len(train_data)} training images."
            )
    effective_batch = batch_size * (accumulation_steps or 1)
    peak = scaled_learning_rate(base_learning_rate, effective_batch)
    schedule = warmup_cosine_for(peak, epochs, steps, min(warmup_epochs, epochs))
    mae.compile(
        optimizer=pretraining_optimizer(
            mae,
            schedule,
            weight_decay=weight_decay,
            gradient_accumulation_steps=accumulation_steps,
        )
    )
    initial_epoch = 0
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        checkpoint = os.path.join(output_dir, "checkpoint")
        done = checkpoint_epoch(checkpoint)
        if done > epochs:
            raise ValueError(
                f"the checkpoint in {checkpoint!r} holds {done} epochs, more than "
                f"epochs={epochs}: ask for {done} or more epochs to continue it, or use "
                "another output directory to start afresh."
            )
        initial_epoch = restore_checkpoint(mae, checkpoint)  # 0 unless resuming
        if initial_epoch and verbose:
            print(f"resuming from {checkpoint} after epoch {initial_epoch}", flush=True)
    callbacks = list(callbacks or [])
    if output_dir is not None:
        callbacks = (
            pretraining_callbacks(output_dir, held_out_images, mean, std, image_every) + callbacks
        )
    summary = {
        "initial_epoch": initial_epoch,
        "epochs": initial_epoch,
        "seconds": 0.0,
        "steps_per_epoch": steps,
        "peak_learning_rate": peak,
        "history": {},
    }
    if epochs > initial_epoch:
        fit = run.fit if run is not None else fit_model
        start = time.time()
        if images is not None:
            history = fit(
                mae,
                images,
                batch_size=batch_size,
                epochs=epochs,
                verbose=verbose,
                validation_data=validation_data,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
            )
        else:
            from keras_mae.data import train_dataset

            dataset, steps = train_dataset(
                train_data,
                mae.image_shape[:2],
                batch_size,
                epochs=epochs,
                initial_epoch=initial_epoch,
                seed=seed,
                mean=mean,
                std=std,
            )
            history = fit(
                mae,
                dataset,
                batch_size=None,
                epochs=epochs,
                verbose=verbose,
                validation_data=validation_data,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps,
                callbacks=callbacks,
            )
        losses = history.history.get("loss", [])
        summary.update(
            seconds=time.time() - start,
            epochs=initial_epoch + len(losses),
            history=history.history,
        )
        if losses:
            summary.update(first_loss=float(losses[0]), last_loss=float(losses[-1]))
    if output_dir is not None:
        mae.save(os.path.join(output_dir, "mae.keras"))
        mae.encoder.save(os.path.join(output_dir, "encoder.keras"))
    return summary


def fit_model(model, x, batch_size, epochs, verbose=1, validation_data=None, **kwargs):
    """`model.fit` with the argument order of a distribution runner's `fit`."""
    return model.fit(
        x,
        batch_size=batch_size,
        epochs=epochs,
        verbose=verbose,
        validation_data=validation_data,
        **kwargs,
    )
