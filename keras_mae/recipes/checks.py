"""Checks at the entry of the recipes, before any model is built or trained.

Each recipe calls one of these first, so that bad input fails in a second, with
a message that names the value, what was expected and what to do, instead of
in the middle of an epoch (or, worse, not at all):

- `recipe_encoder`: the encoder of `linear_probe` / `finetune`; a whole
  `MaskedAutoencoder` is accepted for its `.encoder` (with a one-line notice);
  empty data sets are refused ("0 images"), and integer images whose
  augmentation holds no normalising layer are warned about.
- `check_pretraining_inputs`: the model and data of `pretrain`: empty data, and
  integer images without a normalising augmentation (refused: the model would
  regress raw 0-255 pixel values); `check_pretraining_run` adds the run's
  settings: the epochs, a batch larger than the data, and what a source cannot
  be trained with (the DDP loop, a model augmentation).
- `check_same_kind`: the train and test data of `linear_probe` / `finetune`
  are both arrays or both sources.
- `check_output_dir`: a run's output folder can be written (not a file, not
  under a read-only or unwritable folder); the examples' `--output-dir` too.

One thing can only be found while training: an image file damaged in its middle,
which TensorFlow's decoder reports without a file name. `name_damaged_files`
wraps a recipe so that such an error is replaced by one naming the files (the
source's `explain_read_error`).
"""

import functools
import inspect
import os
import warnings

import keras
import numpy as np

from keras_mae.data.arrays import is_arrays
from keras_mae.kernels.precision import check_compute_dtype
from keras_mae.models.checks import check_pixel_dtype
from keras_mae.models.checks import check_pixel_values
from keras_mae.models.checks import first_batch
from keras_mae.models.checks import has_normalization
from keras_mae.models.mae_encoder import MAEEncoder
from keras_mae.models.masked_autoencoder import MaskedAutoencoder


def dtype_of(images):
    return keras.backend.standardize_dtype(images.dtype)


def count_images(data):
    """The number of images of in-memory data or of a source, or None if unknown."""
    if is_arrays(data):
        return len(data[0])
    if hasattr(data, "shape"):
        return data.shape[0] if len(data.shape) else None
    try:
        return len(data)
    except TypeError:
        return None


def check_not_empty(data, name, recipe):
    count = count_images(data)
    if count == 0:
        shape = tuple(data[0].shape) if is_arrays(data) else None
        raise ValueError(
            f"0 images in {name} given to {recipe}"
            + (f" (images of shape {shape})" if shape is not None else "")
            + ": it needs at least one image. Check the data loading: an empty folder "
            "or split, a wrong path, or a filter that removed every image."
        )


def recipe_encoder(encoder, train, test, augmentation=None, recipe="linear_probe"):
    """The `MAEEncoder` a recipe works on, after checking its data.

    Args:
        encoder: a `keras_mae.MAEEncoder`, or a `keras_mae.MaskedAutoencoder`
            (e.g. a loaded `mae.keras`), whose `.encoder` is then used.
        train, test: the recipe's data (arrays or sources).
        augmentation: the recipe's `augmentation` argument.
        recipe: the recipe's name, for messages.

    Returns:
        The encoder (for a `MaskedAutoencoder`, its `.encoder`).
    """
    if isinstance(encoder, MaskedAutoencoder):
        print(
            f"{recipe}: got a whole MaskedAutoencoder; using its encoder "
            f"(mae.encoder, {encoder.encoder.num_layers} blocks, "
            f"{encoder.encoder.hidden_dim} wide).",
            flush=True,
        )
        encoder = encoder.encoder
    elif not isinstance(encoder, MAEEncoder):
        raise TypeError(
            f"{recipe} takes a keras_mae.MAEEncoder (e.g. "
            "keras.models.load_model('encoder.keras')) or a keras_mae.MaskedAutoencoder "
            f"(its .encoder is used). Received: {type(encoder).__name__}"
        )
    check_compute_dtype(encoder.dtype_policy, "the encoder")
    integer = []
    for name, data in (("train", train), ("test", test)):
        check_not_empty(data, name, recipe)
        if is_arrays(data) and not keras.backend.is_float_dtype(dtype_of(data[0])):
            integer.append((name, dtype_of(data[0])))
    if integer and augmentation is not None and not has_normalization(augmentation):
        names = " and ".join(name for name, _ in integer)
        warnings.warn(
            f"{recipe}: {names} images are {integer[0][1]} (integer pixels) and the "
            f"augmentation {augmentation.name!r} holds no keras.layers.Rescaling or "
            "Normalization: unless one of its own layers normalises, the encoder sees raw "
            "pixel values. Add keras.layers.Rescaling(1 / 255) (or a Normalization) at "
            "its end, or leave augmentation=None for the default, which normalises.",
            stacklevel=3,
        )
    return encoder


def check_pretraining_inputs(mae, train_data):
    """Refuse a `pretrain` call whose model or data cannot train, before any work.

    Raises:
        TypeError: `mae` is not a `keras_mae.MaskedAutoencoder`.
        ValueError: no images ("0 images"), or integer, 0-255 or non-finite
            in-memory images and a model without a normalising augmentation.
    """
    if not isinstance(mae, MaskedAutoencoder):
        raise TypeError(
            "pretrain trains a keras_mae.MaskedAutoencoder (e.g. "
            "keras_mae.MaskedAutoencoder.from_preset('mae_vit_base_patch16')). "
            f"Received: {type(mae).__name__}"
        )
    check_not_empty(train_data, "train_data", "pretrain")
    images = train_data[0] if is_arrays(train_data) else train_data
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        check_pixel_dtype(mae, images.dtype)
        check_pixel_values(mae, first_batch(images)[0], "train_data")


def training_images(train_data):
    """The images of in-memory `train_data` (an array, or `(images, labels)`), or None."""
    if is_arrays(train_data):
        return np.asarray(train_data[0])
    if hasattr(train_data, "shape") and len(train_data.shape) == 4:
        return np.asarray(train_data)
    return None


def check_output_dir(path, name="output_dir"):
    """`path` if a run can write its results there: an existing folder, or a new one
    under a folder this process can write in. Checked before any work, so that a
    run does not train for hours and then fail to save."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"{name} {path!r} is a file, not a folder: a run writes its checkpoint and "
            f"results into a folder. Pass a new or existing folder (e.g. {path + '_run'!r}) "
            "or move the file away."
        )
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"{name} {path!r} lies under {existing!r}, which is a file, not a folder. "
            "Pass a folder path whose parents are folders."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{name} {path!r} cannot be written: {existing!r} is on a read-only disk or "
            "not writable by this user. Pass a folder you can write to."
        )
    return path


def check_pretraining_run(mae, train_data, settings, run=None):
    """Refuse a `pretrain` run that cannot train, before any work; its in-memory images.

    Args:
        mae, train_data: as `pretrain` takes them.
        settings: a `keras_mae.recipes.defaults.PretrainSettings`.
        run: the distribution runner, or None.

    Returns:
        The images of in-memory `train_data` (see `training_images`), or None
        for a source.
    """
    if settings.epochs < 0:
        raise ValueError(f"epochs must be 0 or more. Received: epochs={settings.epochs}")
    if settings.output_dir is not None:
        check_output_dir(settings.output_dir)
    check_pretraining_inputs(mae, train_data)
    images = training_images(train_data)
    if images is None and not hasattr(train_data, "num_classes"):
        raise TypeError(
            "train_data must be in-memory images (N, H, W, C), (images, labels), or a "
            "source from keras_mae.data.load_source. Received: "
            f"{type(train_data).__name__}. {OTHER_DATA_WAY_OUT}"
        )
    if images is not None:
        if len(images) < settings.batch_size:
            raise ValueError(
                f"{len(images)} training images are fewer than one batch of "
                f"{settings.batch_size}: lower the batch size."
            )
        return images
    if getattr(run, "kind", None) == "ddp":
        raise ValueError(
            "the torch DDP loop trains on in-memory images and cannot read a tf.data "
            f"source ({type(train_data).__name__}): load the images into memory "
            "(keras_mae.data.materialize(source).images, with the model's augmentation) "
            "or use another distribution."
        )
    if getattr(mae, "augmentation", None) is not None:
        raise ValueError(
            "the tf.data pipeline already crops, flips and normalises a source; "
            "build the MaskedAutoencoder without augmentation to train on it, or "
            "give in-memory images."
        )
    return None


# What to do with data the recipes do not take (a tf.data.Dataset, a PyDataset, ...).
OTHER_DATA_WAY_OUT = (
    "For a folder that keras.utils.image_dataset_from_directory reads (DIR/<class>/"
    "*.jpg), put it under PATH/train/ (a held-out one under PATH/test/) and pass "
    "keras_mae.data.load_source('folder:PATH', 'train'); for other datasets, collect "
    "(images, labels) into numpy arrays, or train with the model's own compile and "
    "fit, which take any Keras data."
)


def check_recipe_data(data, name):
    """Refuse data a probe or fine-tuning recipe cannot read, naming what it takes."""
    if not is_arrays(data) and not hasattr(data, "num_classes"):
        raise TypeError(
            f"{name} must be (images, labels) numpy arrays or a source from "
            f"keras_mae.data.load_source. Received: {type(data).__name__}. " + OTHER_DATA_WAY_OUT
        )


def check_same_kind(train, test):
    """Refuse data the recipes cannot read, or train and test data of two kinds
    (arrays and a source)."""
    check_recipe_data(train, "train")
    check_recipe_data(test, "test")
    if is_arrays(train) != is_arrays(test):
        raise ValueError(
            "train and test must be of one kind: both (images, labels) arrays or both "
            "keras_mae.data.load_source sources."
        )


def name_damaged_files(*names):
    """Decorate a recipe so that a decoding error of its sources names the files.

    Args:
        names: the recipe's arguments that may hold a source (e.g. an image
            folder from `keras_mae.data.load_source`); a source with an
            `explain_read_error(error)` method turns the error into one that
            names the damaged files.
    """

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def recipe(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except Exception as error:
                arguments = signature.bind_partial(*args, **kwargs).arguments
                for name in names:
                    explain = getattr(arguments.get(name), "explain_read_error", None)
                    named = explain(error) if explain is not None else None
                    if named is not None:
                        raise named from error
                raise

        return recipe

    return decorate
