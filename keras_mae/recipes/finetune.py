"""MAE fine-tuning: the whole encoder + global pool + LayerNorm + linear head.

The official recipe (`main_finetune.py`): the patch tokens are averaged (no cls
token), pass a LayerNorm (`fc_norm`) and a linear head (init std 2e-5); AdamW
(0.9, 0.999), weight decay 0.05, layer-wise learning-rate decay, drop path,
RandAugment m9, mixup 0.8 / cutmix 1.0 (one of the two per batch), label
smoothing 0.1, random erasing 0.25, warmup then cosine.

Layer-wise decay is `keras_mae.optimizers.LayerDecayAdamW`: a learning-rate
multiplier per variable path, applied in `update_step` on every backend.
Augmentation (`keras_mae.data.finetune_augmentations`) runs in `tf.data` with
Keras' own layers (RandAugment, RandomErasing, MixUp, CutMix), which work there
under every backend.
"""

import keras

from keras_mae.layers.token_pooling import TokenPooling
from keras_mae.models.mae_encoder import MAEEncoder
from keras_mae.recipes.linear_probe import predict_with_labels
from keras_mae.recipes.optimizers import layer_decay_optimizer
from keras_mae.recipes.schedules import scaled_learning_rate
from keras_mae.recipes.schedules import warmup_cosine_for


def encoder_for_finetuning(encoder, image_shape=None, drop_path_rate=0.1):
    """A copy of `encoder` with drop path and, optionally, another input size.

    The weights are copied; the fixed sin-cos position table is recomputed for
    the new patch grid (it is a function of the grid, so this is exact where
    the official code interpolates a learned table).

    Args:
        encoder: a `keras_mae.MAEEncoder` (e.g. `keras.models.load_model`).
        image_shape: optional `(H, W, C)`; H and W multiples of the patch size.
        drop_path_rate: float, stochastic depth of the last block.
    """
    config = encoder.get_config()
    config["drop_path_rate"] = drop_path_rate
    if image_shape is not None:
        if tuple(image_shape)[-1] != encoder.image_shape[-1]:
            raise ValueError(
                f"the encoder takes {encoder.image_shape[-1]} channel(s); "
                f"received image_shape={tuple(image_shape)}."
            )
        config["image_shape"] = tuple(image_shape)
    config.pop("name", None)
    new = MAEEncoder.from_config(config)
    source = {w.path: w for w in encoder.weights}
    for weight in new.weights:
        if weight.path.endswith("position_embedding"):
            continue  # recomputed for this grid in build
        if weight.path not in source or tuple(source[weight.path].shape) != tuple(weight.shape):
            raise ValueError(f"cannot copy weight {weight.path!r} into the new encoder.")
        weight.assign(source[weight.path])
    return new


def build_classifier(encoder, num_classes, image_shape=None, drop_path_rate=0.1):
    """The fine-tuning model: images -> encoder -> mean of patch tokens -> LN -> head.

    Args:
        encoder: a pre-trained `keras_mae.MAEEncoder` (copied, not modified).
        num_classes: int.
        image_shape: optional new input size (see `encoder_for_finetuning`).
        drop_path_rate: float. Defaults to 0.1 (ViT-B).

    Returns:
        A functional `keras.Model` from images to logits; its encoder is
        `model.get_layer("encoder")`.
    """
    backbone = encoder_for_finetuning(encoder, image_shape, drop_path_rate)
    images = keras.Input(backbone.image_shape, name="images")
    tokens = backbone(images)  # (B, 1 + L, D)
    pooled = TokenPooling("mean", name="pool")(tokens)  # (B, D)
    pooled = keras.layers.LayerNormalization(epsilon=1e-6, name="fc_norm")(pooled)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=2e-5),
        name="head",
    )(pooled)
    return keras.Model(images, logits, name="mae_classifier")


def finetune(
    encoder,
    train_source,
    test_source,
    epochs=100,
    batch_size=256,
    base_learning_rate=5e-4,
    layer_decay=0.65,
    weight_decay=0.05,
    drop_path_rate=0.1,
    warmup_epochs=5,
    randaugment_magnitude=9,
    random_erasing=0.25,
    mixup=0.8,
    cutmix=1.0,
    label_smoothing=0.1,
    image_shape=None,
    crop_fraction=1.0,
    seed=0,
    verbose=0,
    callbacks=None,
):
    """Fine-tune `encoder` on `train_source`, evaluate top-1 on `test_source`.

    Defaults are the official ViT-B recipe (blr 5e-4 scaled by batch / 256,
    layer decay 0.65, drop path 0.1, 100 epochs, 5 warmup).

    Returns:
        A dict: `"accuracy"` (test top-1), `"model"`, `"history"`.
    """
    from keras_mae.data import eval_dataset
    from keras_mae.data import finetune_augmentations
    from keras_mae.data import train_dataset

    model = build_classifier(encoder, train_source.num_classes, image_shape, drop_path_rate)
    image_size = model.input_shape[1:3]
    num_classes = train_source.num_classes
    image_transform, batch_transform = finetune_augmentations(
        num_classes, randaugment_magnitude, random_erasing, mixup, cutmix, label_smoothing, seed
    )
    dataset, steps = train_dataset(
        train_source,
        image_size,
        batch_size,
        epochs=epochs,
        seed=seed,
        scale=(0.08, 1.0),
        with_labels=True,
        one_hot=num_classes,
        image_transform=image_transform,
        batch_transform=batch_transform,
    )
    compile_classifier(
        model,
        model.get_layer(index=1).num_layers,
        epochs,
        steps,
        batch_size,
        base_learning_rate,
        layer_decay,
        weight_decay,
        warmup_epochs,
    )  # labels arrive smoothed (batch_transform)
    history = model.fit(
        dataset, epochs=epochs, steps_per_epoch=steps, verbose=verbose, callbacks=callbacks
    )
    test_data = eval_dataset(test_source, image_size, batch_size, crop_fraction)
    return {"accuracy": top1(model, test_data), "model": model, "history": history.history}


def compile_classifier(
    model,
    num_layers,
    epochs,
    steps_per_epoch,
    batch_size,
    base_learning_rate=5e-4,
    layer_decay=0.65,
    weight_decay=0.05,
    warmup_epochs=5,
    label_smoothing=0.0,
):
    """Compile `model` with the official fine-tuning optimizer and loss.

    Layer-decayed AdamW over a ViT of `num_layers` blocks, lr = blr x batch /
    256 with warmup + cosine to 1e-6, and cross-entropy on one-hot labels (with
    `label_smoothing`, unless the labels come smoothed already).
    """
    peak = scaled_learning_rate(base_learning_rate, batch_size)
    schedule = warmup_cosine_for(peak, epochs, steps_per_epoch, min(warmup_epochs, epochs), 1e-6)
    model.compile(
        optimizer=layer_decay_optimizer(
            model, num_layers, schedule, layer_decay=layer_decay, weight_decay=weight_decay
        ),
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        ),
        metrics=["accuracy"],
    )


def top1(model, dataset):
    """Top-1 accuracy of `model` over a dataset of `(images, integer labels)`."""
    logits, labels = predict_with_labels(model, dataset)
    return float((logits.argmax(-1) == labels).mean())
