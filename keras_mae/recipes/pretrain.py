"""MAE pre-training as one resumable function over Keras' `fit`.

The official recipe (`main_pretrain.py`): AdamW (0.9, 0.95), weight decay 0.05
(none on biases and norms), `lr = base_lr x effective batch / 256` with
per-step linear warmup then a half-cosine to 0, base lr 1.5e-4, 40 warmup
epochs, 800 epochs; RandomResizedCrop (0.2-1) + flip + normalisation.

Data (each epoch's batches depend only on `(seed, epoch)`, on every path):
- a source from `keras_mae.data.load_source` (or an `ArraySource`): the tf.data
  pipeline crops, flips and normalises (`keras_mae.data.train_dataset`).
- in-memory images (a numpy array, or `(images, labels)`; labels are ignored):
  fed to `fit` as `keras_mae.data.arrays.EpochBatches`, a fixed permutation of
  each epoch drawn from `(seed, epoch)` (Keras' own shuffle is off), full
  batches only; augmentation, if any, is the model's own
  (`MaskedAutoencoder(augmentation=...)`), inside the step, drawn from its
  `SeedGenerator` states. (Under `--distribution ddp` the DDP loop orders the
  arrays itself.)

Resume: every epoch ends with a checkpoint in `output_dir/checkpoint`
(`keras_mae.recipes.callbacks`): model and optimizer variables (every
`SeedGenerator` state among them), the host's random states, the epoch and the
run's settings, written atomically as one file. Calling `pretrain` again with
the same arguments, after a kill at any moment, continues after the last
completed epoch and ends bit-identical to a run that was never interrupted
(weights, optimizer moments and step count, random states, data order).

Guarded re-runs: the checkpoint records what decides the result (`settings`:
the model's configuration, batch size, epochs, the schedule, accumulation
steps, the data's description, seed, mask ratio, `norm_pix_loss`,
normalisation, the Keras backend). A call whose settings differ is refused
before any work with a `ValueError` that lists each difference;
`allow_new_settings=True` (`--continue-with-new-settings`) continues the
checkpoint under the new settings instead, printing what changes. A checkpoint
of an earlier release, which records no backend, resumes under any backend.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from keras_mae.data.arrays import EpochBatches
from keras_mae.data.arrays import fingerprint
from keras_mae.data.statistics import default_mean_std
from keras_mae.models.checks import element_images
from keras_mae.recipes.callbacks import pretraining_callbacks
from keras_mae.recipes.callbacks import read_checkpoint_state
from keras_mae.recipes.callbacks import remove_temporary_files
from keras_mae.recipes.callbacks import restore_checkpoint
from keras_mae.recipes.callbacks import save_model_atomically
from keras_mae.recipes.checks import check_pretraining_run
from keras_mae.recipes.checks import name_damaged_files
from keras_mae.recipes.checks import training_images  # noqa: F401 (keras_mae.recipes.pretrain's)
from keras_mae.recipes.defaults import PretrainSettings
from keras_mae.recipes.optimizers import pretraining_optimizer
from keras_mae.recipes.progress import with_progress
from keras_mae.recipes.schedules import scaled_learning_rate
from keras_mae.recipes.schedules import warmup_cosine_for


@name_damaged_files("train_data")
def pretrain(
    mae,
    train_data,
    epochs=PretrainSettings.epochs,
    batch_size=PretrainSettings.batch_size,
    base_learning_rate=PretrainSettings.base_learning_rate,
    warmup_epochs=PretrainSettings.warmup_epochs,
    weight_decay=PretrainSettings.weight_decay,
    accumulation_steps=PretrainSettings.accumulation_steps,
    output_dir=PretrainSettings.output_dir,
    held_out_images=None,
    mean=PretrainSettings.mean,
    std=PretrainSettings.std,
    image_every=PretrainSettings.image_every,
    validation_data=None,
    seed=PretrainSettings.seed,
    verbose=PretrainSettings.verbose,
    callbacks=None,
    run=None,
    allow_new_settings=PretrainSettings.allow_new_settings,
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
        seed: int, seed of the data order (and tf.data augmentation): epoch e of
            the run is a function of `(seed, e)`. Defaults to 0.
        verbose: `"auto"` (a progress bar on a terminal, one line per epoch
            otherwise), 1 (the bar), 2 (one line per epoch) or 0; see
            `keras_mae.recipes.progress`. Defaults to `"auto"`.
        callbacks: optional extra Keras callbacks.
        run: optional object with `fit(model, x, batch_size, epochs, ...)`, e.g.
            what `keras_mae.distribute.runner.start` returns; defaults to plain
            `mae.fit`.
        allow_new_settings: bool; continue a checkpoint of `output_dir` that
            was written with other settings (printing each change) instead of
            refusing it. Defaults to False.

    Returns:
        A dict: `"initial_epoch"` (epochs done before this call), `"epochs"`
        (epochs done after it), `"seconds"`, `"steps_per_epoch"`,
        `"peak_learning_rate"`, `"history"` (Keras' history of this call) and,
        when it trained, `"first_loss"` and `"last_loss"`.
    """
    settings = PretrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        base_learning_rate=base_learning_rate,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        accumulation_steps=accumulation_steps,
        output_dir=output_dir,
        mean=mean,
        std=std,
        image_every=image_every,
        seed=seed,
        verbose=verbose,
        allow_new_settings=allow_new_settings,
    )
    images = check_pretraining_run(mae, train_data, settings, run)
    data = train_data if images is None else images
    settings, steps = with_data_defaults(mae, data, settings)
    recorded = recorded_settings(mae, data, settings)
    checkpoint, changes = checkpoint_changes(recorded, settings)
    peak = compile_for_pretraining(mae, settings, steps)
    initial_epoch = restore_run(mae, checkpoint, changes, steps, settings)
    batch_images = training_batch_images(mae, data, settings, run)
    callbacks = run_callbacks(settings, held_out_images, recorded, callbacks, batch_images)
    summary = {
        "initial_epoch": initial_epoch,
        "epochs": initial_epoch,
        "seconds": 0.0,
        "steps_per_epoch": steps,
        "peak_learning_rate": peak,
        "history": {},
    }
    if epochs > initial_epoch:
        summary.update(
            fit_epochs(
                mae,
                data,
                settings,
                initial_epoch,
                run=run,
                validation_data=validation_data,
                callbacks=callbacks,
            )
        )
    if output_dir is not None:
        save_models(mae, output_dir, checkpoint)
    return summary


def with_data_defaults(mae, data, settings):
    """`(settings, steps per epoch)`: a source's steps, and its normalisation made explicit.

    The tf.data pipeline normalises a source, by default with `default_mean_std`;
    in-memory images keep `mean` and `std` as given (only the pictures use them).
    A source of fewer images than one batch is refused with the batch that fits
    (in-memory images are checked by `check_pretraining_run`).
    """
    if isinstance(data, np.ndarray):
        return settings, len(
            data
        ) // settings.batch_size  # full batches, as EpochBatches feeds them
    if settings.mean is None or settings.std is None:
        mean, std = default_mean_std(mae.image_shape[-1])  # the pipeline's default
        settings = dataclasses.replace(settings, mean=mean, std=std)
    count = len(data)
    steps = count // settings.batch_size
    if steps < 1:
        way_out = (
            f"Pass batch_size={count} or fewer (--batch-size {count} in the examples), or "
            "add images."
            if count
            else "Add images."
        )
        raise ValueError(
            f"batch_size={settings.batch_size} is larger than the {count} training "
            f"images: an epoch would hold no full batch. {way_out}"
        )
    return settings, steps


def recorded_settings(mae, data, settings):
    """What the checkpoint records of this run (`run_settings` of its settings)."""
    in_memory = isinstance(data, np.ndarray)
    return run_settings(
        mae,
        data,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        base_learning_rate=settings.base_learning_rate,
        warmup_epochs=settings.warmup_epochs,
        weight_decay=settings.weight_decay,
        accumulation_steps=settings.accumulation_steps,
        seed=settings.seed,
        mean=None if in_memory else settings.mean,
        std=None if in_memory else settings.std,
    )


def checkpoint_changes(recorded, settings):
    """`(checkpoint directory or None, [changed setting, ...])`, refusing what cannot go on.

    A checkpoint of more epochs than the run's, or of other settings without
    `allow_new_settings`, is refused with a `ValueError` before any work.
    """
    if settings.output_dir is None:
        return None, []
    checkpoint = os.path.join(settings.output_dir, "checkpoint")
    state = read_checkpoint_state(checkpoint)
    done = state["epoch"] if state else 0
    if done > settings.epochs:
        raise ValueError(
            f"the checkpoint in {checkpoint!r} holds {done} epochs, more than "
            f"epochs={settings.epochs}: ask for {done} or more epochs to continue it, or use "
            "another output directory to start afresh."
        )
    if not (state and state.get("settings") is not None):
        return checkpoint, []
    changes = settings_differences(state["settings"], recorded)
    if changes and not settings.allow_new_settings:
        raise ValueError(
            f"the checkpoint in {checkpoint!r} (epoch {done}) was written with other "
            "settings than this run's:\n"
            + "\n".join(f"  {line}" for line in changes)
            + "\nNothing was changed. To start afresh with these settings, use another "
            "--output-dir; to go on from the checkpoint with the new settings, pass "
            "--continue-with-new-settings (pretrain(..., allow_new_settings=True)); "
            "to resume it as it was, run with the settings it records."
        )
    return checkpoint, changes


def compile_for_pretraining(mae, settings, steps):
    """Compile `mae` with the official optimizer and schedule; returns the peak lr."""
    effective_batch = settings.batch_size * (settings.accumulation_steps or 1)
    peak = scaled_learning_rate(settings.base_learning_rate, effective_batch)
    warmup = min(settings.warmup_epochs, settings.epochs)
    schedule = warmup_cosine_for(peak, settings.epochs, steps, warmup)
    mae.compile(
        optimizer=pretraining_optimizer(
            mae,
            schedule,
            weight_decay=settings.weight_decay,
            gradient_accumulation_steps=settings.accumulation_steps,
        )
    )
    return peak


def restore_run(mae, checkpoint, changes, steps, settings):
    """Restore the checkpoint into the compiled `mae`; the epochs it holds (0 without one).

    Under new settings (`changes`), the optimizer's step count moves to the
    resumed epoch of the new schedule.
    """
    if settings.output_dir is None:
        return 0
    os.makedirs(settings.output_dir, exist_ok=True)
    remove_temporary_files(settings.output_dir, ("mae.keras", "encoder.keras"))
    initial_epoch = restore_checkpoint(mae, checkpoint)  # 0 unless resuming
    if changes:
        print(
            f"continuing the checkpoint in {checkpoint} (epoch {initial_epoch}) with new "
            "settings:\n" + "\n".join(f"  {line}" for line in changes),
            flush=True,
        )
        iterations = int(keras.ops.convert_to_numpy(mae.optimizer.iterations))
        if iterations != initial_epoch * steps:
            # The schedule counts optimizer steps: go on at epoch initial_epoch of it.
            mae.optimizer.iterations.assign(initial_epoch * steps)
            print(
                f"  optimizer step count: {iterations} -> {initial_epoch * steps} "
                f"(epoch {initial_epoch} of the new schedule, {steps} steps per epoch)",
                flush=True,
            )
    elif initial_epoch and settings.verbose:
        print(f"resuming from {checkpoint} after epoch {initial_epoch}", flush=True)
    return initial_epoch


def run_callbacks(settings, held_out_images, recorded, callbacks=None, batch_images=None):
    """The pre-training callbacks when the run writes files, then `callbacks`;
    `batch_images` as `training_batch_images` gives it."""
    callbacks = list(callbacks or [])
    if settings.output_dir is None:
        return callbacks
    return (
        pretraining_callbacks(
            settings.output_dir,
            held_out_images,
            mean=settings.mean,
            std=settings.std,
            image_every=settings.image_every,
            settings=recorded,
            batch_images=batch_images,
        )
        + callbacks
    )


def fit_inputs(mae, data, settings, initial_epoch, run=None):
    """`(x, arguments)` that `fit` takes for epochs `initial_epoch ..` of `data`.

    Epoch e's batches are a function of `(seed, e)` on every path, so a resumed
    run sees the batches an uninterrupted one would.
    """
    if isinstance(data, np.ndarray) and getattr(run, "kind", "none") == "ddp":
        # The DDP loop orders and shards the arrays itself: epoch e's order is
        # epoch_order(N, seed, e), as EpochBatches'.
        return data, {"batch_size": settings.batch_size, "seed": settings.seed}
    if isinstance(data, np.ndarray):
        x = EpochBatches(
            data, settings.batch_size, settings.epochs, initial_epoch, seed=settings.seed
        )
        steps = len(data) // settings.batch_size
    else:
        from keras_mae.data import train_dataset

        x, steps = train_dataset(
            data,
            mae.image_shape[:2],
            settings.batch_size,
            epochs=settings.epochs,
            initial_epoch=initial_epoch,
            seed=settings.seed,
            mean=settings.mean,
            std=settings.std,
        )
    # The stream is ordered by (seed, epoch): Keras' own shuffle stays off.
    return x, {"batch_size": None, "steps_per_epoch": steps, "shuffle": False}


def training_batch_images(mae, data, settings, run=None):
    """`(epoch, batch) -> images`: training batch `batch` of epoch `epoch` drawn again,
    as `fit_inputs` feeds it (a function of `(seed, epoch)` on every path), for
    the non-finite-loss stop to look at once."""

    def images_at(epoch, batch):
        if isinstance(data, np.ndarray):
            batches = EpochBatches(data, settings.batch_size, epoch + 1, epoch, seed=settings.seed)
            return element_images(batches[batch]) if batch < len(batches) else None
        x, _ = fit_inputs(mae, data, settings, epoch, run)
        for element in x.skip(batch).take(1):
            return element_images(element)
        return None

    return images_at


def fit_epochs(mae, data, settings, initial_epoch, run=None, **arguments):
    """Fit epochs `initial_epoch .. epochs - 1`; the summary's `seconds`, `epochs`,
    `history` and, when it trained, `first_loss` and `last_loss`."""
    fit = run.fit if run is not None else fit_model
    start = time.time()
    x, data_arguments = fit_inputs(mae, data, settings, initial_epoch, run)
    history = fit(
        mae,
        x,
        epochs=settings.epochs,
        verbose=settings.verbose,
        initial_epoch=initial_epoch,
        **data_arguments,
        **arguments,
    )
    losses = history.history.get("loss", [])
    summary = {
        "seconds": time.time() - start,
        "epochs": initial_epoch + len(losses),
        "history": history.history,
    }
    if losses:
        summary.update(first_loss=float(losses[0]), last_loss=float(losses[-1]))
    return summary


def save_models(mae, output_dir, checkpoint):
    """Write `mae.keras` and `encoder.keras` into `output_dir`, each atomically."""
    recovery = (
        f"the checkpoint in {checkpoint!r} is intact: run the same command again to write it."
    )
    save_model_atomically(mae, os.path.join(output_dir, "mae.keras"), recovery)
    save_model_atomically(mae.encoder, os.path.join(output_dir, "encoder.keras"), recovery)


def _plain(value):
    """`value` as JSON gives it back (tuples as lists), so saved and new settings compare."""
    return json.loads(json.dumps(value, default=str))


def model_settings(config):
    """A model's `get_config()` without layer names (auto-numbered within a process)."""
    if isinstance(config, dict):
        is_layer = "trainable" in config or "build_config" in config
        return {
            key: model_settings(value)
            for key, value in config.items()
            if not (key == "name" and is_layer)
        }
    if isinstance(config, (list, tuple)):
        return [model_settings(value) for value in config]
    return config


def data_settings(data):
    """What identifies the training data: a source's `describe()`, or an array's digest."""
    if hasattr(data, "describe"):
        return data.describe()
    return {"source": "arrays", **fingerprint(data)}


def run_settings(mae, data, **settings):
    """What decides a pre-training run's result, as a JSON-able dict (see the module)."""
    model = model_settings(mae.get_config())
    # Activation checkpointing changes memory, not results: a run may resume with or without it.
    model.pop("remat", None)
    return _plain(
        {
            **settings,
            # Each backend draws masks and drop paths its own way (see
            # settings_differences). Its name is recorded, never branched on.
            "backend": keras.config.backend(),
            "mask_ratio": model.pop("mask_ratio", None),
            "norm_pix_loss": model.pop("norm_pix_loss", None),
            "data": data_settings(data),
            "model": model,
        }
    )


def _flatten(settings, prefix=""):
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def settings_differences(saved, new):
    """`["batch_size: checkpoint 16, now 32", ...]`, one line per setting that differs.

    The Keras backend's line says what a change of backend does. A checkpoint
    of an earlier release records no backend: it goes on under any backend.
    """
    saved, new = _flatten(saved), _flatten(_plain(new))
    if "backend" not in saved:
        new.pop("backend", None)
    missing = object()
    lines = []
    for key in sorted(set(saved) | set(new)):
        before, after = saved.get(key, missing), new.get(key, missing)
        if key == "backend" and before != after:
            lines.append(
                f"backend: checkpoint written under {before}, this run under {after} (each "
                "backend draws the masks and drop paths its own way: going on would equal "
                f"neither backend's uninterrupted run; KERAS_BACKEND={before} resumes it as "
                "it was)"
            )
        elif before != after:
            before = "(not recorded)" if before is missing else json.dumps(before)
            after = "(not set)" if after is missing else json.dumps(after)
            lines.append(f"{key}: checkpoint {before}, now {after}")
    return lines


def fit_model(model, x, batch_size, epochs, verbose="auto", validation_data=None, **kwargs):
    """`model.fit` with the argument order of a distribution runner's `fit`; `verbose`
    as the recipes take it (`keras_mae.recipes.progress`)."""
    callbacks = with_progress(kwargs.pop("callbacks", None), verbose)
    return model.fit(
        x,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,  # the progress is among the callbacks: Keras' own bar stays off
        validation_data=validation_data,
        callbacks=callbacks,
        **kwargs,
    )
