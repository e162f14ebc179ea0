"""The MAE linear probe: a frozen encoder, its cls token, BatchNorm without affine + Dense.

The official protocol (`main_linprobe.py`): the encoder is frozen; the cls
token after the final norm feeds `BatchNorm(affine=False, eps=1e-6)` and a
linear head (init std 0.01); LARS (momentum 0.9, no weight decay), base
learning rate 0.1 scaled by batch / 256, warmup then cosine; RandomResizedCrop
+ flip for training, resize + centre crop for evaluation.

On a CPU, `cache_features=True` (the default) runs the frozen encoder once per
image (evaluation transform, no augmentation) and trains the BatchNorm + head
on those features: the same model and optimizer, without the augmentation.
"""

import keras
import numpy as np

from keras_mae.layers.token_pooling import TokenPooling
from keras_mae.recipes.optimizers import LARS
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


def build_linear_probe(encoder, num_classes):
    """The probe model: images -> frozen `encoder` -> cls token -> BN -> logits.

    Args:
        encoder: a `keras_mae.MAEEncoder` (frozen here: `trainable = False`).
        num_classes: int.

    Returns:
        A functional `keras.Model` from images to logits `(batch, num_classes)`.
    """
    encoder.trainable = False
    images = keras.Input(encoder.input_shape[1:], name="images")
    tokens = encoder(images, training=False)  # (B, 1 + L, D)
    features = TokenPooling("cls", name="cls_token")(tokens)  # (B, D)
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
    return np.asarray(outputs), labels


def cls_features(encoder, dataset):
    """The cls token of `encoder` for every batch of `dataset` ((images, labels))."""
    return predict_with_labels(keras.Sequential([encoder, TokenPooling("cls")]), dataset)


def probe_on_features(
    x_train,
    y_train,
    x_test,
    y_test,
    num_classes,
    epochs=90,
    batch_size=256,
    base_learning_rate=0.1,
    warmup_epochs=10,
    verbose=0,
):
    """Train the probe head on cached features; returns `(accuracy, head, history)`."""
    steps = int(np.ceil(len(x_train) / batch_size))
    head = probe_head(num_classes)
    compile_probe(head, lars_for(epochs, steps, batch_size, base_learning_rate, warmup_epochs))
    history = head.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose
    )
    _, accuracy = head.evaluate(x_test, y_test, batch_size=batch_size, verbose=0)
    return float(accuracy), head, history


def linear_probe(
    encoder,
    train_source,
    test_source,
    epochs=90,
    batch_size=256,
    base_learning_rate=0.1,
    warmup_epochs=10,
    cache_features=True,
    crop_fraction=1.0,
    seed=0,
    verbose=0,
):
    """Train and evaluate the official linear probe of `encoder`.

    Args:
        encoder: a `keras_mae.MAEEncoder` (its image size sets the crops).
        train_source, test_source: from `keras_mae.data.load_source`.
        epochs: int. Defaults to 90 (official).
        batch_size: int. Defaults to 256 (official: 16384, with the same blr).
        base_learning_rate: float. Defaults to 0.1.
        warmup_epochs: int. Defaults to 10.
        cache_features: bool; see the module docstring. Defaults to True.
        crop_fraction: evaluation centre-crop fraction (0.875 for ImageNet).
        seed: int.
        verbose: Keras fit verbosity.

    Returns:
        A dict: `"accuracy"` (test top-1), `"train_accuracy"`, `"model"` (the
        head on features, or the whole probe model) and `"history"`.
    """
    from keras_mae.data import eval_dataset
    from keras_mae.data import train_dataset

    image_size = encoder.input_shape[1:3]
    num_classes = train_source.num_classes
    test_data = eval_dataset(test_source, image_size, batch_size, crop_fraction)
    if cache_features:
        train_data = eval_dataset(train_source, image_size, batch_size, crop_fraction)
        x_train, y_train = cls_features(encoder, train_data)
        x_test, y_test = cls_features(encoder, test_data)
        accuracy, model, history = probe_on_features(
            x_train,
            y_train,
            x_test,
            y_test,
            num_classes,
            epochs,
            batch_size,
            base_learning_rate,
            warmup_epochs,
            verbose,
        )
    else:
        model = build_linear_probe(encoder, num_classes)
        dataset, steps = train_dataset(
            train_source,
            image_size,
            batch_size,
            epochs=epochs,
            seed=seed,
            scale=(0.08, 1.0),
            with_labels=True,
        )
        compile_probe(model, lars_for(epochs, steps, batch_size, base_learning_rate, warmup_epochs))
        history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps, verbose=verbose)
        _, accuracy = model.evaluate(test_data, verbose=0)
    return {
        "accuracy": float(accuracy),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "model": model,
        "history": history.history,
    }
