"""MAE fine-tuning: the whole encoder + global pool + LayerNorm + linear head.

The official recipe (`main_finetune.py`): the patch tokens are averaged (no cls
token), pass a LayerNorm (`fc_norm`) and a linear head (init std 2e-5); AdamW
(0.9, 0.999), weight decay 0.05, layer-wise learning-rate decay, drop path,
RandAugment m9, mixup 0.8 / cutmix 1.0 (one of the two per batch), label
smoothing 0.1, random erasing 0.25, warmup then cosine. ViT-B: base lr 5e-4,
layer decay 0.65, drop path 0.1, 100 epochs, 5 warmup.

Layer-wise decay is `keras_mae.recipes.optimizers.LayerDecayAdamW`: a
learning-rate multiplier per variable path, applied in `update_step` on every
backend.

Data comes in one of two forms:
- a source from `keras_mae.data.load_source` (or an `ArraySource`): the
  augmentation runs in `tf.data` (`keras_mae.data.finetune_augmentations`),
  with Keras' own layers (RandAugment, RandomErasing, MixUp, CutMix);
- in-memory arrays `(images, labels)`: the same Keras layers run inside the
  compiled step (`AugmentedClassifier`): RandomResizedCrop, flip, RandAugment,
  random erasing and normalisation (`image_augmentation`), then label
  smoothing and mixup or cutmix of each batch.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_mae import kernels
from keras_mae.data.arrays import check_arrays
from keras_mae.data.arrays import is_arrays
from keras_mae.data.statistics import max_pixel_value
from keras_mae.layers.token_pooling import TokenPooling
from keras_mae.models.mae_encoder import MAEEncoder
from keras_mae.recipes.augmentation import image_augmentation
from keras_mae.recipes.checks import check_same_kind
from keras_mae.recipes.checks import name_damaged_files
from keras_mae.recipes.checks import recipe_encoder
from keras_mae.recipes.defaults import FinetuneSettings
from keras_mae.recipes.linear_probe import labelled_stream_inputs
from keras_mae.recipes.linear_probe import predict_with_labels
from keras_mae.recipes.optimizers import layer_decay_optimizer
from keras_mae.recipes.progress import with_progress
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


@keras.saving.register_keras_serializable(package="keras_mae")
class AugmentedClassifier(keras.Model):
    """A classifier trained on raw images, its augmentation inside the compiled step.

    Training inputs are `{"images": images, "labels": integer labels}`: the
    images pass `augmentation` (random layers active), the labels become
    one-hot and smoothed, and MixUp or CutMix (one of the two per batch, at
    random, as the official recipe when both are on) mixes images and labels;
    the loss is the cross-entropy with the mixed labels. Images alone (or any
    call outside training) pass the augmentation in inference mode, the
    evaluation transform, and the classifier: `predict(images)` gives logits.
    It is registered for `keras.models.load_model` when this module is imported.

    Args:
        classifier: a `keras.Model` from normalised images to logits (e.g.
            `build_classifier`).
        num_classes: int.
        augmentation: optional built Keras layer from raw images to the
            classifier's input (see `image_augmentation`).
        mixup: float, `keras.layers.MixUp`'s alpha; 0 turns it off. Defaults to 0.
        cutmix: float, `keras.layers.CutMix`'s factor; 0 turns it off.
            Defaults to 0.
        label_smoothing: float in [0, 1). Defaults to 0.
        seed: int or None, seed of the mixing.

    Example:

    ```python
    model = AugmentedClassifier(build_classifier(encoder, 10), 10,
        image_augmentation(encoder.image_shape, max_value=255.0), mixup=0.8)
    model.compile(optimizer="adamw")
    model.fit({"images": uint8_images, "labels": labels}, batch_size=256)
    logits = model.predict(test_images)
    ```
    """

    def __init__(
        self,
        classifier,
        num_classes,
        augmentation=None,
        mixup=0.0,
        cutmix=0.0,
        label_smoothing=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mixup < 0 or cutmix < 0 or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                "mixup and cutmix must be >= 0 (0 turns them off) and label_smoothing "
                f"in [0, 1). Received: mixup={mixup}, cutmix={cutmix}, "
                f"label_smoothing={label_smoothing}"
            )
        if augmentation is not None and not augmentation.built:
            raise ValueError(
                "build the augmentation for the raw inputs first, e.g. "
                "augmentation.build((None, H, W, C)) (image_augmentation returns it built)."
            )
        self.classifier = classifier
        self.num_classes = num_classes
        self.augmentation = augmentation
        self.mixup = mixup
        self.cutmix = cutmix
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.mix_up = keras.layers.MixUp(alpha=mixup, seed=seed) if mixup else None
        self.cut_mix = keras.layers.CutMix(factor=cutmix, seed=seed) if cutmix else None
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def build(self, input_shape=None):
        # Every weight exists from construction; nothing depends on the input.
        self.built = True

    def call(self, inputs, training=False):
        labels = None
        if isinstance(inputs, dict):
            images, labels = inputs["images"], inputs.get("labels")
        else:
            images = inputs
        if self.augmentation is not None:
            # Keras' random image layers default to training=True: pass a bool.
            images = self.augmentation(images, training=bool(training))  # (B, H, W, C)
        if not training or labels is None:
            return self.classifier(images, training=training)
        images, labels = self.mix(images, self.smoothed_one_hot(labels))
        return {"logits": self.classifier(images, training=True), "labels": labels}

    def smoothed_one_hot(self, labels):
        """`(B,)` integer labels -> `(B, num_classes)` smoothed one-hot targets."""
        one_hot = ops.one_hot(ops.cast(labels, "int32"), self.num_classes)
        return one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes

    def mix(self, images, labels):
        """MixUp or CutMix of a batch: with both on, one of the two at random."""
        data = {"images": images, "labels": labels}
        if self.mix_up is not None and self.cut_mix is not None:
            mixed = self.mix_up(data, training=True)
            cut = self.cut_mix(data, training=True)
            use_cut = keras.random.uniform((), seed=self.seed_generator) < 0.5
            images = ops.where(
                use_cut, cut["images"], ops.cast(mixed["images"], cut["images"].dtype)
            )
            labels = ops.where(
                use_cut, cut["labels"], ops.cast(mixed["labels"], cut["labels"].dtype)
            )
            return images, labels
        layer = self.mix_up if self.mix_up is not None else self.cut_mix
        if layer is None:
            return images, labels
        out = layer(data, training=True)
        return out["images"], out["labels"]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        if isinstance(y_pred, dict):  # training: the mixed targets
            target, logits = y_pred["labels"], y_pred["logits"]
        else:
            if y is None:
                raise ValueError(
                    "AugmentedClassifier trains on {'images': images, 'labels': labels} "
                    "and evaluates on (images, labels); received no labels."
                )
            target, logits = self.smoothed_one_hot(y), y_pred
        loss = ops.mean(
            keras.losses.categorical_crossentropy(
                ops.cast(target, "float32"), ops.cast(logits, "float32"), from_logits=True
            )
        )
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(extra, "float32") for extra in self.losses]))
        return kernels.scale_loss_for_replicas(loss)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "num_classes": self.num_classes,
            "augmentation": (
                None
                if self.augmentation is None
                else keras.saving.serialize_keras_object(self.augmentation)
            ),
            "mixup": self.mixup,
            "cutmix": self.cutmix,
            "label_smoothing": self.label_smoothing,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)


@name_damaged_files("train", "test")
def finetune(
    encoder,
    train,
    test,
    epochs=FinetuneSettings.epochs,
    batch_size=FinetuneSettings.batch_size,
    base_learning_rate=FinetuneSettings.base_learning_rate,
    layer_decay=FinetuneSettings.layer_decay,
    weight_decay=FinetuneSettings.weight_decay,
    drop_path_rate=FinetuneSettings.drop_path_rate,
    warmup_epochs=FinetuneSettings.warmup_epochs,
    randaugment_magnitude=FinetuneSettings.randaugment_magnitude,
    random_erasing=FinetuneSettings.random_erasing,
    mixup=FinetuneSettings.mixup,
    cutmix=FinetuneSettings.cutmix,
    label_smoothing=FinetuneSettings.label_smoothing,
    image_shape=FinetuneSettings.image_shape,
    augmentation=None,
    mean=FinetuneSettings.mean,
    std=FinetuneSettings.std,
    crop_fraction=FinetuneSettings.crop_fraction,
    seed=FinetuneSettings.seed,
    verbose=FinetuneSettings.verbose,
    callbacks=None,
):
    """Fine-tune `encoder` on `train`, evaluate top-1 on `test`.

    Defaults are the official ViT-B recipe (blr 5e-4 scaled by batch / 256,
    layer decay 0.65, weight decay 0.05, drop path 0.1, 100 epochs, 5 warmup,
    RandAugment m9, random erasing 0.25, mixup 0.8, cutmix 1.0, smoothing 0.1).

    Args:
        encoder: a pre-trained `keras_mae.MAEEncoder` (copied, not modified).
        train, test: in-memory `(images, labels)` arrays (uint8 or float in
            [0, 1]), or sources from `keras_mae.data.load_source` (both of one
            kind); see the module docstring.
        epochs, batch_size, base_learning_rate, layer_decay, weight_decay,
            drop_path_rate, warmup_epochs: the optimisation; `lr = blr x batch
            / 256`, warmup then cosine to 1e-6.
        randaugment_magnitude: float in [0, 10]; 0 turns RandAugment off.
        random_erasing: float, the erasing factor; 0 turns it off.
        mixup: float, MixUp's alpha; 0 turns it off.
        cutmix: float, CutMix's factor; 0 turns it off.
        label_smoothing: float.
        image_shape: optional new input size (see `encoder_for_finetuning`).
        augmentation: arrays only: a built Keras layer from the raw images to the
            classifier's input (random layers act only when training). Defaults
            to `image_augmentation(..., scale=(0.08, 1.0), mean, std,
            randaugment_magnitude, random_erasing)` for the arrays' value range;
            with your own layer, put RandAugment and random erasing in it and
            pass `randaugment_magnitude=0, random_erasing=0`.
        mean, std: the normalisation on the [0, 1] scale, for sources and for
            the default augmentation. Default: ImageNet's for RGB, 0.5 for grey.
        crop_fraction: sources only: evaluation centre-crop fraction.
        seed: int.
        verbose: `"auto"` (a progress bar on a terminal, one line per epoch
            otherwise), 1 (the bar), 2 (one line per epoch) or 0 (nothing); see
            `keras_mae.recipes.progress`. Defaults to 0.
        callbacks: optional Keras callbacks for `fit`.

    Returns:
        A dict: `"accuracy"` (test top-1), `"model"` (a classifier from images
        to logits: for arrays an `AugmentedClassifier` taking raw images, whose
        `classifier` is the plain model) and `"history"`.
    """
    encoder = recipe_encoder(encoder, train, test, augmentation, "finetune")
    settings = FinetuneSettings(
        epochs=epochs,
        batch_size=batch_size,
        base_learning_rate=base_learning_rate,
        layer_decay=layer_decay,
        weight_decay=weight_decay,
        drop_path_rate=drop_path_rate,
        warmup_epochs=warmup_epochs,
        randaugment_magnitude=randaugment_magnitude,
        random_erasing=random_erasing,
        mixup=mixup,
        cutmix=cutmix,
        label_smoothing=label_smoothing,
        image_shape=image_shape,
        mean=mean,
        std=std,
        crop_fraction=crop_fraction,
        seed=seed,
        verbose=verbose,
    )
    check_same_kind(train, test)
    if is_arrays(train):
        train, test = check_arrays(train, "train"), check_arrays(test, "test")
        model = augmented_classifier(encoder, train, test, augmentation, settings)
    elif augmentation is not None:
        raise ValueError(
            "augmentation acts on in-memory (images, labels) arrays; a load_source "
            "source is augmented by the tf.data pipeline. Pass arrays, or leave "
            "augmentation=None."
        )
    else:
        model = build_classifier(encoder, train.num_classes, image_shape, drop_path_rate)
    inputs, steps = finetune_fit_inputs(model, train, settings)
    compile_for_finetuning(model, steps, settings)
    callbacks = with_progress(callbacks, verbose)  # Keras' own bar stays off: verbose=0
    history = model.fit(**inputs, epochs=epochs, verbose=0, callbacks=callbacks)
    accuracy = evaluate_top1(model, test, settings)
    return {"accuracy": accuracy, "model": model, "history": history.history}


def augmented_classifier(encoder, train, test, augmentation, settings):
    """The `AugmentedClassifier` of in-memory arrays: by default `image_augmentation`
    with the settings' RandAugment, random erasing and normalisation."""
    (images, labels), (_, test_labels) = train, test
    num_classes = int(max(labels.max(), test_labels.max())) + 1
    classifier = build_classifier(
        encoder, num_classes, settings.image_shape, settings.drop_path_rate
    )
    if augmentation is None:
        augmentation = image_augmentation(
            classifier.input_shape[1:],
            scale=(0.08, 1.0),
            mean=settings.mean,
            std=settings.std,
            max_value=max_pixel_value(images),
            randaugment_magnitude=settings.randaugment_magnitude,
            random_erasing=settings.random_erasing,
            seed=settings.seed,
            input_shape=images.shape[1:],
        )
    elif (
        settings.randaugment_magnitude
        or settings.random_erasing
        or settings.mean is not None
        or settings.std is not None
    ):
        raise ValueError(
            "with your own augmentation layer, put RandAugment, random erasing and the "
            "normalisation in it (see keras_mae.recipes.augmentation.image_augmentation) "
            "and pass randaugment_magnitude=0, random_erasing=0 and no mean or std. "
            f"Received: randaugment_magnitude={settings.randaugment_magnitude}, "
            f"random_erasing={settings.random_erasing}, mean={settings.mean}, "
            f"std={settings.std}"
        )
    return AugmentedClassifier(
        classifier,
        num_classes,
        augmentation,
        mixup=settings.mixup,
        cutmix=settings.cutmix,
        label_smoothing=settings.label_smoothing,
        seed=settings.seed,
    )


def finetune_fit_inputs(model, train, settings):
    """`(fit arguments, steps per epoch)` for the training data `train` of `model`."""
    if is_arrays(train):  # the augmentation and mixing run in the step (AugmentedClassifier)
        images, labels = train
        inputs = {
            "x": {"images": images, "labels": labels},
            "batch_size": settings.batch_size,
            "shuffle": True,
        }
        return inputs, math.ceil(len(images) / settings.batch_size)  # the last partial batch kept
    from keras_mae.data import finetune_augmentations

    image_transform, batch_transform = finetune_augmentations(
        train.num_classes,
        randaugment_magnitude=settings.randaugment_magnitude,
        random_erasing=settings.random_erasing,
        mixup=settings.mixup,
        cutmix=settings.cutmix,
        label_smoothing=settings.label_smoothing,
        seed=settings.seed,
    )
    return labelled_stream_inputs(
        train,
        model.input_shape[1:3],
        settings,
        one_hot=train.num_classes,
        image_transform=image_transform,
        batch_transform=batch_transform,
    )


def compile_for_finetuning(model, steps_per_epoch, settings):
    """Compile `model` with the official optimizer: an `AugmentedClassifier` with its
    own loss (mixed, smoothed targets), a plain classifier with the cross-entropy on
    the one-hot labels a source gives (smoothed already by its `batch_transform`)."""
    if isinstance(model, AugmentedClassifier):
        num_layers = model.classifier.get_layer(index=1).num_layers
        model.compile(optimizer=optimizer_for(model, num_layers, steps_per_epoch, settings))
    else:
        num_layers = model.get_layer(index=1).num_layers
        compile_with_optimizer(model, optimizer_for(model, num_layers, steps_per_epoch, settings))


def evaluate_top1(model, test, settings):
    """Top-1 accuracy of the fine-tuned `model` on `test` (arrays or a source)."""
    if is_arrays(test):
        images, labels = test
        logits = np.asarray(model.predict(images, batch_size=settings.batch_size, verbose=0))
        return float((logits.argmax(-1) == labels).mean())
    from keras_mae.data import eval_dataset

    test_data = eval_dataset(
        test,
        model.input_shape[1:3],
        settings.batch_size,
        settings.crop_fraction,
        mean=settings.mean,
        std=settings.std,
    )
    return top1(model, test_data)


def optimizer_for(model, num_layers, steps_per_epoch, settings):
    """The official fine-tuning optimizer of `settings` (see `finetuning_optimizer`)."""
    peak = scaled_learning_rate(settings.base_learning_rate, settings.batch_size)
    warmup = min(settings.warmup_epochs, settings.epochs)
    schedule = warmup_cosine_for(peak, settings.epochs, steps_per_epoch, warmup, 1e-6)
    return layer_decay_optimizer(
        model,
        num_layers,
        schedule,
        layer_decay=settings.layer_decay,
        weight_decay=settings.weight_decay,
    )


def compile_with_optimizer(model, optimizer, label_smoothing=0.0):
    """`compile_classifier` with a given optimizer."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        ),
        metrics=["accuracy"],
    )


def finetuning_optimizer(
    model,
    num_layers,
    epochs,
    steps_per_epoch,
    batch_size,
    base_learning_rate=FinetuneSettings.base_learning_rate,
    layer_decay=FinetuneSettings.layer_decay,
    weight_decay=FinetuneSettings.weight_decay,
    warmup_epochs=FinetuneSettings.warmup_epochs,
):
    """Layer-decayed AdamW over a ViT of `num_layers` blocks, lr = blr x batch / 256,
    warmup + cosine to 1e-6 (the official fine-tuning optimizer)."""
    settings = FinetuneSettings(
        epochs=epochs,
        batch_size=batch_size,
        base_learning_rate=base_learning_rate,
        layer_decay=layer_decay,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
    )
    return optimizer_for(model, num_layers, steps_per_epoch, settings)


def compile_classifier(
    model,
    num_layers,
    epochs,
    steps_per_epoch,
    batch_size,
    base_learning_rate=FinetuneSettings.base_learning_rate,
    layer_decay=FinetuneSettings.layer_decay,
    weight_decay=FinetuneSettings.weight_decay,
    warmup_epochs=FinetuneSettings.warmup_epochs,
    label_smoothing=0.0,
):
    """Compile `model` with the official fine-tuning optimizer and loss.

    Layer-decayed AdamW over a ViT of `num_layers` blocks, lr = blr x batch /
    256 with warmup + cosine to 1e-6, and cross-entropy on one-hot labels (with
    `label_smoothing`, unless the labels come smoothed already).
    """
    optimizer = finetuning_optimizer(
        model,
        num_layers,
        epochs,
        steps_per_epoch,
        batch_size,
        base_learning_rate,
        layer_decay,
        weight_decay,
        warmup_epochs,
    )
    compile_with_optimizer(model, optimizer, label_smoothing)


def top1(model, dataset):
    """Top-1 accuracy of `model` over a dataset of `(images, integer labels)`."""
    logits, labels = predict_with_labels(model, dataset)
    return float((logits.argmax(-1) == labels).mean())
