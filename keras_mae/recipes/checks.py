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
  regress raw 0-255 pixel values).

One thing can only be found while training: an image file damaged in its middle,
which TensorFlow's decoder reports without a file name. `name_damaged_files`
wraps a recipe so that such an error is replaced by one naming the files (the
source's `explain_read_error`).
"""

import functools
import inspect
import warnings

import keras

from keras_mae.data.arrays import is_arrays
from keras_mae.kernels.precision import check_compute_dtype
from keras_mae.models.mae_encoder import MAEEncoder
from keras_mae.models.masked_autoencoder import MaskedAutoencoder
from keras_mae.models.masked_autoencoder import has_normalization


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
        ValueError: no images ("0 images"), or integer in-memory images and a
            model without a normalising augmentation.
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
        mae.check_pixel_dtype(images.dtype)


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
