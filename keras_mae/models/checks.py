"""Checks of a `MaskedAutoencoder`'s arguments and data, before any work.

Each names what was wrong, what was expected and what to do (STYLE: errors
say what to do), and runs at one of three points:

- `check_arguments`: every constructor argument, under the name the caller
  used, before any layer exists.
- `check_call_inputs`: the inputs of each call (a dict's keys, the images'
  dtype and shape), when the step is traced or run eagerly.
- `check_fit_data`: the data given to `fit` or `evaluate` (empty data,
  integer pixels the model cannot normalise, non-finite noise), before Keras
  converts it or runs a step.
"""

import warnings

import keras

from keras_mae import kernels
from keras_mae.kernels.precision import check_compute_dtype
from keras_mae.layers import checks
from keras_mae.layers.patching import check_image_shape
from keras_mae.layers.random_masking import check_mask_ratio
from keras_mae.layers.random_masking import check_noise_values

# Layers that bring integer pixels (0-255) to a small float range.
NORMALIZING_LAYERS = (keras.layers.Rescaling, keras.layers.Normalization)


def check_arguments(
    *,
    image_shape,
    patch_size,
    hidden_dim,
    num_layers,
    num_heads,
    mlp_ratio,
    decoder_hidden_dim,
    decoder_num_layers,
    decoder_num_heads,
    mask_ratio,
    norm_pix_loss,
    layer_norm_epsilon,
    seed,
    augmentation,
    attention_padding,
    remat,
    dtype,
):
    """Every constructor argument of a `MaskedAutoencoder`, before any layer exists."""
    grid = check_image_shape(None if image_shape is None else tuple(image_shape), patch_size)
    checks.check_transformer(hidden_dim, num_layers, num_heads, mlp_ratio, layer_norm_epsilon)
    checks.check_transformer(
        decoder_hidden_dim,
        decoder_num_layers,
        decoder_num_heads,
        mlp_ratio,
        layer_norm_epsilon,
        prefix="decoder_",
    )
    checks.check_bool("norm_pix_loss", norm_pix_loss)
    checks.check_seed("seed", seed)
    check_mask_ratio(mask_ratio, grid[0] * grid[1])
    check_compute_dtype(keras.dtype_policies.get(dtype), "the MaskedAutoencoder")
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        raise TypeError(
            "augmentation must be a Keras layer (e.g. keras.Sequential([...])) or "
            f"None. Received: augmentation={augmentation!r}"
        )
    kernels.check_attention_padding(attention_padding)
    if not isinstance(remat, bool):  # as `keras_mae.ViTBlock` says it
        raise TypeError(f"remat must be True or False. Received: remat={remat!r}")
    channels = image_shape[-1]
    if norm_pix_loss and patch_size * patch_size * channels < 2:
        raise ValueError(
            "norm_pix_loss needs patches of 2 or more values to normalise; "
            f"received patch_size={patch_size} with {channels} channel(s)."
        )


def has_normalization(layer):
    """Whether `layer` is, or contains (through `.layers`), a Rescaling or Normalization."""
    if isinstance(layer, NORMALIZING_LAYERS):
        return True
    return any(has_normalization(inner) for inner in getattr(layer, "layers", ()))


def dtype_name(dtype):
    return keras.backend.standardize_dtype(dtype)


def integer_images_message(dtype):
    return (
        f"images are {dtype} (integer pixels, e.g. 0-255) and the model has no "
        "augmentation to normalise them: it would regress raw pixel values (a loss in "
        "the thousands). Give floats in [0, 1] (e.g. images.astype('float32') / 255), "
        "or build the MaskedAutoencoder with augmentation=keras.Sequential([..., "
        "keras.layers.Rescaling(1 / 255)]) or a keras.layers.Normalization, which "
        "normalise inside the step."
    )


def check_pixel_dtype(model, dtype):
    """Integer images need a normalising augmentation: refused without one, and
    warned about (once per model) with an augmentation that holds none."""
    if keras.backend.is_float_dtype(dtype_name(dtype)):
        return
    if model.augmentation is None:
        raise ValueError(integer_images_message(dtype_name(dtype)))
    if not has_normalization(model.augmentation) and not model.warned_unnormalized:
        model.warned_unnormalized = True
        warnings.warn(
            f"images are {dtype_name(dtype)} (integer pixels) and the model's "
            f"augmentation {model.augmentation.name!r} holds no keras.layers.Rescaling "
            "or Normalization: unless one of its own layers normalises, the model "
            "regresses raw pixel values. Add keras.layers.Rescaling(1 / 255) (or a "
            "Normalization) at its end.",
            stacklevel=2,
        )


def check_images(model, images):
    """Images of the model's `image_shape` (after its augmentation, if any)."""
    shape, expected = tuple(images.shape), model.image_shape
    if len(shape) == 4 and shape[1:] == expected:
        return
    got = shape[1:] if len(shape) == 4 else shape
    if len(shape) == 4 and shape[-1] != expected[-1]:
        problem = f"images have {shape[-1]} channel(s) but the model expects {expected[-1]}"
    else:
        problem = f"images of shape {got} do not match the model"
    raise ValueError(
        f"{problem}: expected batches of shape (batch, {', '.join(map(str, expected))}), "
        f"from image_shape={expected}. Resize or convert the images, or build the model "
        "with the matching image_shape."
        + (" (checked after the model's augmentation)" if model.augmentation else "")
    )


def check_call_inputs(model, inputs):
    """The inputs of a call: a dict's keys, then the images' dtype and (without an
    augmentation, which is checked on its output) shape."""
    if isinstance(inputs, dict):
        unknown = set(inputs) - {"images", "noise"}
        if "images" not in inputs or unknown:
            raise ValueError(
                "a dict input must hold 'images' and optionally 'noise'. "
                f"Received keys: {sorted(inputs)}"
            )
        inputs = inputs["images"]
    check_pixel_dtype(model, inputs.dtype)
    if model.augmentation is None:
        check_images(model, inputs)


def data_images(data):
    """The images of `fit`/`evaluate` data when they can be seen without reading
    it: an array (or tensor), a dict's `"images"`, the first of a tuple; None
    for datasets and generators."""
    if isinstance(data, dict):
        data = data.get("images")
    elif isinstance(data, (tuple, list)) and data:
        data = data[0]
    return data if hasattr(data, "shape") and hasattr(data, "dtype") else None


def dataset_images_spec(data):
    """The images' `(shape, dtype)` spec of a `tf.data.Dataset`-like input, or None."""
    spec = getattr(data, "element_spec", None)
    if isinstance(spec, dict):
        spec = spec.get("images")
    elif isinstance(spec, (tuple, list)) and spec:
        spec = spec[0]
        if isinstance(spec, dict):
            spec = spec.get("images")
    return spec if hasattr(spec, "dtype") and hasattr(spec, "shape") else None


def check_data(model, data, name="x", method="fit"):
    """Refuse empty or integer (un-normalised) data, or non-finite noise."""
    if isinstance(data, dict) and data.get("noise") is not None:
        check_noise_values(data["noise"])
    images = data_images(data)
    if images is not None:
        shape, dtype = tuple(images.shape), images.dtype
    else:
        spec = dataset_images_spec(data)
        if spec is None:
            return
        shape, dtype = tuple(spec.shape), spec.dtype
        cardinality = getattr(data, "cardinality", None)
        if callable(cardinality) and int(cardinality()) == 0:
            raise ValueError(
                f"0 images: the dataset given as {name} to {method} is empty (cardinality "
                "0). Check the data: an empty folder or split, a filter or take() "
                "that removed every element."
            )
    if len(shape) >= 1 and shape[0] == 0 and images is not None:
        raise ValueError(
            f"0 images: {method} received {name} of shape {shape}. Give at least one "
            "image (N >= 1); check the data loading (an empty folder or split, a "
            "filter that removed every image)."
        )
    check_pixel_dtype(model, dtype)


def check_fit_data(model, method, x, validation_data=None):
    """The data of `model.fit` (`method="fit"`) or `model.evaluate`, before Keras
    converts it or runs a step."""
    check_data(model, x, method=method)
    if validation_data is not None:
        check_data(model, validation_data, "validation_data", method)
