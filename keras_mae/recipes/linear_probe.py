"""The MAE linear probe: a frozen encoder, its cls token, BatchNorm without affine + Dense.

The official protocol (`main_linprobe.py`): the encoder is frozen; the cls
token after the final norm feeds `BatchNorm(affine=False, eps=1e-6)` and a
linear head (init std 0.01); LARS (momentum 0.9, no weight decay), base
learning rate 0.1 scaled by batch / 256, 10 warmup epochs then cosine, 90
epochs; RandomResizedCrop (0.08-1) + flip for training, resize + centre crop
for evaluation.

Data comes in one of two forms:
- a source from `keras_mae.data.load_source` (or an `ArraySource`): the tf.data
  pipeline crops, flips and normalises;
- in-memory arrays `(images, labels)` (uint8 or float in [0, 1]): the
  augmentation is a Keras layer inside the compiled step, by default
  `keras_mae.recipes.augmentation.image_augmentation` (RandomResizedCrop
  0.08-1, flip, normalisation); in inference mode it is the evaluation
  transform.

`cache_features=True` (the default) runs the frozen encoder once per image
with the evaluation transform and trains the BatchNorm + head on those
features: the same model and optimizer, without the augmentation. Several
poolings (`"cls"`, the official one, and `"mean"`, the average of the patch
tokens) come from that one pass, and several base learning rates train on the
same features.

`base_learning_rate="auto"` (the default) chooses the rate on the training
split alone: the probe is trained at each of
`keras_mae.recipes.defaults.PROBE_BASE_LEARNING_RATES` (0.1, the official
value, to 25.6) on the cached features of nine tenths of it and scored on the
other tenth (per class); the best is then trained on the whole split and
scored on `test`. The official 0.1 is tuned for ~7,000 LARS steps at batch
16,384; on a small data set it barely moves the head in the few hundred steps
there are. The test split plays no part in the choice.
"""

import math
from typing import NamedTuple

import keras
import numpy as np

from keras_mae.data.arrays import check_arrays
from keras_mae.data.arrays import is_arrays
from keras_mae.data.statistics import max_pixel_value
from keras_mae.layers.token_pooling import TokenPooling
from keras_mae.recipes.augmentation import image_augmentation
from keras_mae.recipes.checks import check_same_kind
from keras_mae.recipes.checks import name_damaged_files
from keras_mae.recipes.checks import recipe_encoder
from keras_mae.recipes.defaults import PROBE_BASE_LEARNING_RATES
from keras_mae.recipes.defaults import ProbeSettings
from keras_mae.recipes.optimizers import LARS
from keras_mae.recipes.progress import with_progress
from keras_mae.recipes.schedules import scaled_learning_rate
from keras_mae.recipes.schedules import warmup_cosine_for


def probe_head(num_classes, name="probe"):
    """BatchNorm (no affine, eps 1e-6, torch momentum 0.1) + Dense (std 0.01)."""
    return keras.Sequential(
        [
            keras.layers.BatchNormalization(
                center=False, scale=False, epsilon=1e-6, momentum=0.9, name="probe_norm"
            ),
            keras.layers.Dense(
                num_classes,
                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
                name="probe_head",
            ),
        ],
        name=name,
    )


def build_linear_probe(
    encoder, num_classes, pooling="cls", augmentation=None, input_shape=None, input_dtype=None
):
    """The probe model: images -> [augmentation] -> frozen `encoder` -> pooling -> BN -> logits.

    Args:
        encoder: a `keras_mae.MAEEncoder` (frozen here: `trainable = False`).
        num_classes: int.
        pooling: `"cls"` (official) or `"mean"` (see `keras_mae.TokenPooling`).
            Defaults to `"cls"`.
        augmentation: optional Keras layer applied to the inputs first (random
            layers act only when training); see `image_augmentation`.
        input_shape: `(H, W, C)` of the inputs when an augmentation resizes
            them. Defaults to the encoder's.
        input_dtype: dtype of the inputs, e.g. `"uint8"` for raw images into
            an augmentation. Defaults to float32.

    Returns:
        A functional `keras.Model` from images to logits `(batch, num_classes)`.
    """
    encoder.trainable = False
    images = keras.Input(input_shape or encoder.input_shape[1:], dtype=input_dtype, name="images")
    x = images if augmentation is None else augmentation(images)
    tokens = encoder(x, training=False)  # (B, 1 + L, D)
    features = TokenPooling(pooling, name=f"{pooling}_pooling")(tokens)  # (B, D)
    return keras.Model(images, probe_head(num_classes)(features), name="linear_probe")


def lars_for(epochs, steps_per_epoch, batch_size, base_learning_rate=0.1, warmup_epochs=10):
    """LARS with the probe's learning rate: blr x batch / 256, warmup + cosine."""
    peak = scaled_learning_rate(base_learning_rate, batch_size)
    schedule = warmup_cosine_for(peak, epochs, steps_per_epoch, min(warmup_epochs, epochs))
    return LARS(schedule, momentum=0.9, weight_decay=0.0)


def compile_probe(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def predict_with_labels(model, dataset):
    """`(model outputs, labels)` over a dataset of `(images, labels)` batches."""
    outputs = model.predict(dataset.map(lambda images, labels: images), verbose=0)  # jit
    labels = np.concatenate([labels for _, labels in dataset.as_numpy_iterator()])
    return (outputs if isinstance(outputs, dict) else np.asarray(outputs)), labels


def encoder_features(
    encoder,
    data,
    poolings=("cls",),
    batch_size=256,
    augmentation=None,
    crop_fraction=1.0,
    mean=None,
    std=None,
):
    """The frozen encoder's pooled features of every image, from one pass.

    Args:
        encoder: a `keras_mae.MAEEncoder`.
        data: `(images, labels)` arrays, or a `keras_mae.data.load_source` source.
        poolings: tuple of `"cls"` / `"mean"`.
        batch_size: int.
        augmentation: for arrays, a layer whose inference mode is the evaluation
            transform (e.g. normalisation); None feeds the images as given.
        crop_fraction, mean, std: for sources, the evaluation transform of
            `keras_mae.data.eval_dataset`.

    Returns:
        `({pooling: float32 (N, D)}, labels (N,))`.
    """
    poolings = tuple(poolings)
    if is_arrays(data):
        images, labels = check_arrays(data, "data")
        inputs = keras.Input(images.shape[1:], dtype=str(images.dtype), name="images")
        x = inputs if augmentation is None else augmentation(inputs, training=False)
    else:
        from keras_mae.data import eval_dataset

        dataset = eval_dataset(
            data, encoder.input_shape[1:3], batch_size, crop_fraction, mean=mean, std=std
        )
        inputs = keras.Input(encoder.input_shape[1:], name="images")
        x = inputs
    tokens = encoder(x, training=False)  # (B, 1 + L, D)
    outputs = {p: TokenPooling(p, name=f"{p}_pooling")(tokens) for p in poolings}
    model = keras.Model(inputs, outputs, name="encoder_features")
    if is_arrays(data):
        features = model.predict(images, batch_size=batch_size, verbose=0)
    else:
        features, labels = predict_with_labels(model, dataset)
    return {p: np.asarray(features[p], "float32") for p in poolings}, np.asarray(labels)


def probe_on_features(
    x_train,
    y_train,
    x_test,
    y_test,
    num_classes,
    epochs=ProbeSettings.epochs,
    batch_size=ProbeSettings.batch_size,
    base_learning_rate=0.1,
    warmup_epochs=ProbeSettings.warmup_epochs,
    verbose=ProbeSettings.verbose,
):
    """Train the probe head on cached features; returns `(accuracy, head, history)`."""
    steps = int(np.ceil(len(x_train) / batch_size))
    head = probe_head(num_classes)
    optimizer = lars_for(
        epochs,
        steps,
        batch_size,
        base_learning_rate=base_learning_rate,
        warmup_epochs=warmup_epochs,
    )
    compile_probe(head, optimizer)
    history = head.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,  # the progress is among the callbacks: Keras' own bar stays off
        callbacks=with_progress([], verbose),
    )
    _, accuracy = head.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
    return float(accuracy), head, history


def held_out_split(labels, fraction=0.1, seed=0):
    """`(train, held_out)` indices: `fraction` of each class (at least one image of a
    class with two or more) held out, drawn with `seed`."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        count = min(max(count, 1 if len(members) > 1 else 0), len(members) - 1)
        held.append(members[:count])
        train.append(members[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def choose_base_learning_rate(
    features,
    labels,
    num_classes,
    rates=None,
    epochs=ProbeSettings.epochs,
    batch_size=ProbeSettings.batch_size,
    warmup_epochs=ProbeSettings.warmup_epochs,
    fraction=0.1,
    seed=0,
):
    """The base learning rate of `rates` whose probe scores best on a held-out part.

    Trains the probe head on `features` of all but `fraction` of each class and
    scores it on the rest, once per rate (each from the same seed).

    Args:
        features: float `(N, D)`, cached features of the training split.
        labels: int `(N,)`.
        num_classes: int.
        rates: the base learning rates to try. Defaults to
            `PROBE_BASE_LEARNING_RATES`.
        epochs, batch_size, warmup_epochs: the probe's (as it is then trained).
        fraction: float, the share of each class held out. Defaults to 0.1.
        seed: int, the split and each probe's initialisation.

    Returns:
        `(rate, {rate: held-out accuracy})`; a tie goes to the smaller rate.
    """
    rates = PROBE_BASE_LEARNING_RATES if rates is None else rates
    train, held = held_out_split(labels, fraction, seed)
    if not len(held):
        raise ValueError(
            f"choosing the probe's learning rate needs a held-out part of the training "
            f"split, and {len(labels)} training images of {len(np.unique(labels))} "
            "classes leave none: give base_learning_rate (e.g. 0.1) instead of 'auto'."
        )
    scores = {}
    for rate in rates:
        keras.utils.set_random_seed(seed)
        scores[rate], _, _ = probe_on_features(
            features[train],
            labels[train],
            features[held],
            labels[held],
            num_classes,
            epochs=epochs,
            batch_size=min(batch_size, len(train)),
            base_learning_rate=rate,
            warmup_epochs=warmup_epochs,
        )
    best = max(scores.values())
    return min(rate for rate, score in scores.items() if score == best), scores


def as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


class ProbeData(NamedTuple):
    """The data of a probe run, checked: `train` and `test` (arrays or sources),
    `num_classes`, and for arrays the augmentation (None for sources)."""

    train: object
    test: object
    num_classes: int
    augmentation: object


@name_damaged_files("train", "test")
def linear_probe(
    encoder,
    train,
    test,
    pooling=ProbeSettings.pooling,
    epochs=ProbeSettings.epochs,
    batch_size=ProbeSettings.batch_size,
    base_learning_rate=ProbeSettings.base_learning_rate,
    warmup_epochs=ProbeSettings.warmup_epochs,
    cache_features=ProbeSettings.cache_features,
    augmentation=None,
    mean=ProbeSettings.mean,
    std=ProbeSettings.std,
    crop_fraction=ProbeSettings.crop_fraction,
    seed=ProbeSettings.seed,
    verbose=ProbeSettings.verbose,
):
    """Train and evaluate the official linear probe of `encoder`.

    Args:
        encoder: a `keras_mae.MAEEncoder` (its image size sets the crops).
        train, test: in-memory `(images, labels)` arrays, or sources from
            `keras_mae.data.load_source` (both of one kind).
        pooling: `"cls"` (official) or `"mean"`, or a list of both: each is
            probed (from one encoder pass when features are cached).
        epochs: int. Defaults to 90 (official).
        batch_size: int. Defaults to 256 (official: 16384, with the same blr).
        base_learning_rate: float, `lr = blr x batch / 256`, or a list of them:
            each is probed; or `"auto"`: the best of `PROBE_BASE_LEARNING_RATES`
            on a held-out tenth of `train` (see the module docstring; with
            `cache_features=False` the choice is made on cached features).
            Defaults to `"auto"` (the candidates include the official 0.1).
        warmup_epochs: int. Defaults to 10 (official).
        cache_features: bool; see the module docstring. Defaults to True.
        augmentation: arrays only: a Keras layer run on the training images
            inside the step (random layers act only when training) and, in
            inference mode, on the test images and the cached images. Defaults
            to `image_augmentation(encoder.image_shape, scale=(0.08, 1.0),
            mean, std)` for the arrays' value range.
        mean, std: the normalisation on the [0, 1] scale, for sources and for
            the default augmentation. Default: ImageNet's for RGB, 0.5 for grey.
        crop_fraction: sources only: evaluation centre-crop fraction (0.875
            for ImageNet). Defaults to 1.0.
        seed: int; seeds the augmentation and, before each probe is trained,
            `keras.utils.set_random_seed`, so every probe starts alike.
        verbose: `"auto"` (a progress bar on a terminal, one line per epoch
            otherwise), 1 (the bar), 2 (one line per epoch) or 0 (nothing), for
            each probe's `fit`; see `keras_mae.recipes.progress`. Defaults to 0.

    Returns:
        A dict: `"accuracy"` (test top-1), `"train_accuracy"`, `"model"` (the
        head on features, or the whole probe model), `"history"`, `"pooling"`
        and `"base_learning_rate"`; with `"auto"`, also `"held_out_accuracy"`
        (`{rate: accuracy}` of the choice). When `pooling` or
        `base_learning_rate` is a list, a list of such dicts, one per pair
        (poolings outer).
    """
    encoder = recipe_encoder(encoder, train, test, augmentation, "linear_probe")
    settings = ProbeSettings(
        pooling=pooling,
        epochs=epochs,
        batch_size=batch_size,
        base_learning_rate=base_learning_rate,
        warmup_epochs=warmup_epochs,
        cache_features=cache_features,
        mean=mean,
        std=std,
        crop_fraction=crop_fraction,
        seed=seed,
        verbose=verbose,
    )
    auto = check_probe_settings(settings)
    check_same_kind(train, test)
    data = probe_data(encoder, train, test, augmentation, settings)
    train_features, chosen = None, {}  # chosen: pooling -> (rate, held-out accuracies)
    if auto:
        train_features = split_features(encoder, data.train, data, settings)
        chosen = choose_rates(train_features, data.num_classes, settings)
    grid = [  # (pooling, base learning rate) pairs, poolings outer
        (name, rate)
        for name in as_tuple(pooling)
        for rate in ((chosen[name][0],) if auto else as_tuple(base_learning_rate))
    ]
    if cache_features:
        results = probe_cached_features(encoder, data, grid, settings, train_features)
    else:
        results = []
        for name, rate in grid:
            keras.utils.set_random_seed(seed)
            results.append(train_probe_model(encoder, data, name, rate, settings))
    for entry in results:
        if auto:
            entry["held_out_accuracy"] = chosen[entry["pooling"]][1]
    if isinstance(pooling, (list, tuple)) or (
        isinstance(base_learning_rate, (list, tuple)) and not auto
    ):
        return results
    return results[0]


def check_probe_settings(settings):
    """Refuse a pooling name, or `"auto"` mixed with rates; whether the rate is `"auto"`."""
    rates = as_tuple(settings.base_learning_rate)
    auto = "auto" in rates
    if auto and len(rates) > 1:
        raise ValueError(
            f"base_learning_rate={settings.base_learning_rate!r} mixes 'auto' with rates: "
            "give 'auto' alone (it tries "
            + ", ".join(map(str, PROBE_BASE_LEARNING_RATES))
            + ") or a list of rates."
        )
    for name in as_tuple(settings.pooling):
        TokenPooling(name)  # validates the name
    return auto


def probe_data(encoder, train, test, augmentation, settings):
    """The checked `ProbeData`; for arrays, the default augmentation when none is given."""
    if not is_arrays(train):
        if augmentation is not None:
            raise ValueError(
                "augmentation acts on in-memory (images, labels) arrays; a "
                "load_source source is cropped, flipped and normalised by the tf.data "
                "pipeline. Pass arrays, or leave augmentation=None."
            )
        return ProbeData(train, test, train.num_classes, None)
    train, test = check_arrays(train, "train"), check_arrays(test, "test")
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    if augmentation is None:
        augmentation = image_augmentation(
            encoder.image_shape,
            scale=(0.08, 1.0),
            mean=settings.mean,
            std=settings.std,
            max_value=max_pixel_value(train[0]),
            seed=settings.seed,
            input_shape=train[0].shape[1:],
        )
    elif settings.mean is not None or settings.std is not None:
        raise ValueError(
            "give either an augmentation layer (which normalises) or mean and std "
            "for the default one, not both."
        )
    return ProbeData(train, test, num_classes, augmentation)


def split_features(encoder, split, data, settings):
    """`encoder_features` of one split, every pooling, with the evaluation transform."""
    return encoder_features(
        encoder,
        split,
        as_tuple(settings.pooling),
        batch_size=settings.batch_size,
        augmentation=data.augmentation,
        crop_fraction=settings.crop_fraction,
        mean=settings.mean,
        std=settings.std,
    )


def choose_rates(train_features, num_classes, settings):
    """`{pooling: (rate, held-out accuracies)}`: `choose_base_learning_rate` per pooling."""
    features, labels = train_features
    return {
        name: choose_base_learning_rate(
            features[name],
            labels,
            num_classes,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            warmup_epochs=settings.warmup_epochs,
            seed=settings.seed,
        )
        for name in as_tuple(settings.pooling)
    }


def probe_cached_features(encoder, data, grid, settings, train_features=None):
    """A probe per `(pooling, rate)` of `grid`, trained on cached features."""
    if train_features is None:
        train_features = split_features(encoder, data.train, data, settings)
    f_train, y_train = train_features
    f_test, y_test = split_features(encoder, data.test, data, settings)
    results = []
    for name, rate in grid:
        keras.utils.set_random_seed(settings.seed)
        accuracy, model, history = probe_on_features(
            f_train[name],
            y_train,
            f_test[name],
            y_test,
            data.num_classes,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            base_learning_rate=rate,
            warmup_epochs=settings.warmup_epochs,
            verbose=settings.verbose,
        )
        results.append(result(accuracy, model, history.history, name, rate))
    return results


def result(accuracy, model, history, pooling, base_learning_rate):
    return {
        "accuracy": float(accuracy),
        "train_accuracy": float(history["accuracy"][-1]),
        "model": model,
        "history": history,
        "pooling": pooling,
        "base_learning_rate": base_learning_rate,
    }


def train_probe_model(encoder, data, pooling, base_learning_rate, settings):
    """The probe trained end to end on augmented images (the encoder stays frozen)."""
    if data.augmentation is not None:  # in-memory arrays: augmentation inside the step
        images = data.train[0]
        model = build_linear_probe(
            encoder,
            data.num_classes,
            pooling,
            data.augmentation,
            input_shape=images.shape[1:],
            input_dtype=str(images.dtype),
        )
    else:
        model = build_linear_probe(encoder, data.num_classes, pooling)
    inputs, steps = probe_fit_inputs(encoder, data, settings)
    optimizer = lars_for(
        settings.epochs,
        steps,
        settings.batch_size,
        base_learning_rate=base_learning_rate,
        warmup_epochs=settings.warmup_epochs,
    )
    compile_probe(model, optimizer)
    callbacks = with_progress([], settings.verbose)  # Keras' own bar stays off: verbose=0
    history = model.fit(**inputs, epochs=settings.epochs, verbose=0, callbacks=callbacks)
    _, accuracy = model.evaluate(**probe_test_inputs(encoder, data, settings), verbose=0)
    return result(accuracy, model, history.history, pooling, base_learning_rate)


def probe_fit_inputs(encoder, data, settings):
    """`(fit arguments, steps per epoch)` for the training split of `data`."""
    if data.augmentation is not None:  # arrays: Keras shuffles, keeps the last partial batch
        images, labels = data.train
        inputs = {"x": images, "y": labels, "batch_size": settings.batch_size, "shuffle": True}
        return inputs, math.ceil(len(images) / settings.batch_size)
    return labelled_stream_inputs(data.train, encoder.input_shape[1:3], settings)


def labelled_stream_inputs(source, image_size, settings, **transforms):
    """`(fit arguments, steps per epoch)` of the tf.data training stream of a labelled
    `source` for a classifier (crop scale (0.08, 1), shuffled by (seed, epoch));
    `transforms` go to `train_dataset` (fine-tuning's one-hot labels and augmentations)."""
    from keras_mae.data import train_dataset

    dataset, steps = train_dataset(
        source,
        image_size,
        settings.batch_size,
        epochs=settings.epochs,
        seed=settings.seed,
        scale=(0.08, 1.0),
        mean=settings.mean,
        std=settings.std,
        with_labels=True,
        **transforms,
    )
    # The stream is shuffled already (Keras would warn): its own shuffle stays off.
    return {"x": dataset, "steps_per_epoch": steps, "shuffle": False}, steps


def probe_test_inputs(encoder, data, settings):
    """The `evaluate` arguments for the test split of `data`."""
    if data.augmentation is not None:
        images, labels = data.test
        return {"x": images, "y": labels, "batch_size": settings.batch_size}
    from keras_mae.data import eval_dataset

    test_data = eval_dataset(
        data.test,
        encoder.input_shape[1:3],
        settings.batch_size,
        settings.crop_fraction,
        mean=settings.mean,
        std=settings.std,
    )
    return {"x": test_data}
