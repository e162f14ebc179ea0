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

import inspect
import warnings

import keras
import numpy as np

from keras_mae import kernels
from keras_mae.kernels.precision import check_compute_dtype
from keras_mae.layers import checks
from keras_mae.layers.patching import check_image_shape
from keras_mae.layers.random_masking import check_mask_ratio
from keras_mae.layers.random_masking import check_noise
from keras_mae.layers.random_masking import check_noise_values
from keras_mae.layers.random_masking import shape_of

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


def augmented_shape(model, shape):
    """The shape the model's augmentation gives `shape`, or None where it cannot say."""
    try:
        return tuple(model.augmentation.compute_output_shape(shape))
    except Exception:  # a layer without a static output shape: checked in `call`
        return None


def check_images(model, shape, augmented=False):
    """Images of the model's `image_shape` (`augmented`: after its augmentation)."""
    shape, expected = tuple(shape), model.image_shape
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
        + (" (checked after the model's augmentation)" if augmented else "")
    )


def check_call_inputs(model, inputs, noise=None):
    """The inputs of a call, before Keras wraps it (`ChecksInputsFirst`): a dict's
    keys, the images' dtype and shape (after the augmentation, where its output
    shape is known; else in `call`) and the noise's shape and values."""
    if isinstance(inputs, dict):
        unknown = set(inputs) - {"images", "noise"}
        if "images" not in inputs or unknown:
            raise ValueError(
                "a dict input must hold 'images' and optionally 'noise'. "
                f"Received keys: {sorted(inputs)}"
            )
        noise = inputs.get("noise", noise)
        inputs = inputs["images"]
    check_pixel_dtype(model, inputs.dtype)
    shape = shape_of(inputs)
    if noise is not None:
        check_noise(noise, (shape[0] if shape else None, model.num_patches))
    if model.augmentation is not None:
        shape = augmented_shape(model, shape)
        if shape is None:
            return
    check_images(model, shape, augmented=model.augmentation is not None)


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
    """Refuse empty, integer (un-normalised), 0-255 or non-finite images, or
    non-finite noise; returns `data` (a generator is given back with its first
    batch, which was looked at, in front)."""
    if isinstance(data, dict) and data.get("noise") is not None:
        check_noise_values(data["noise"])
    images, spec = data_images(data), None
    if images is not None:
        shape, dtype = tuple(images.shape), images.dtype
    else:
        spec = dataset_images_spec(data)
        if spec is not None:
            shape, dtype = tuple(spec.shape), spec.dtype
            cardinality = getattr(data, "cardinality", None)
            if callable(cardinality) and int(cardinality()) == 0:
                raise ValueError(
                    f"0 images: the dataset given as {name} to {method} is empty "
                    "(cardinality 0). Check the data: an empty folder or split, a "
                    "filter or take() that removed every element."
                )
    if images is not None and len(shape) >= 1 and shape[0] == 0:
        raise ValueError(
            f"0 images: {method} received {name} of shape {shape}. Give at least one "
            "image (N >= 1); check the data loading (an empty folder or split, a "
            "filter that removed every image)."
        )
    if images is not None or spec is not None:
        check_pixel_dtype(model, dtype)
    values, data = first_batch(data)
    check_pixel_values(model, values, name)
    return data


def check_fit_data(model, method, x, validation_data=None):
    """The data of `model.fit` (`method="fit"`) or `model.evaluate`, before Keras
    converts it or runs a step; returns `(x, validation_data)` to give Keras."""
    x = check_data(model, x, method=method)
    if validation_data is not None:
        validation_data = check_data(model, validation_data, "validation_data", method)
    return x, validation_data


# The largest value of a normalised float image batch: pixels in [0, 1], or pixels
# normalised by a mean and std (ImageNet's give about [-2.2, 2.7]). A batch past it
# is on the 0-255 scale (which stays below it only if every pixel is darker than 16).
NORMALIZED_LIMIT = 16.0
# The images of an in-memory array that are looked at: its first batch, at most.
SAMPLED_IMAGES = 256


def to_host(value):
    """`value` (numpy, or a TensorFlow, JAX or PyTorch tensor) as a numpy array."""
    if value is None:
        return None
    try:
        return np.asarray(value)
    except (TypeError, RuntimeError, ValueError):  # e.g. a tensor on an accelerator
        return np.asarray(keras.ops.convert_to_numpy(value))


def element_images(element):
    """The images of one batch: the batch, a dict's `"images"`, or a tuple's first
    (`(images, labels)` as `keras.utils.image_dataset_from_directory` yields)."""
    if isinstance(element, (tuple, list)) and element:
        element = element[0]
    if isinstance(element, dict):
        element = element.get("images")
    return element if hasattr(element, "shape") and hasattr(element, "dtype") else None


def first_batch(data):
    """`(values, data)`: the images of `data`'s first batch on the host (None where
    they cannot be seen), and `data` to train on.

    Arrays give their first `SAMPLED_IMAGES`; a `tf.data.Dataset` its first
    element (read once more by `fit`: a pipeline that reshuffles on each
    iteration starts its first epoch from its second order); a
    `keras.utils.PyDataset` its batch 0; a generator its first batch, given
    back in front of the rest.
    """
    images = data_images(data)
    if images is not None:
        return to_host(images[:SAMPLED_IMAGES]), data
    if isinstance(data, keras.utils.PyDataset):
        return (to_host(element_images(data[0])) if len(data) else None), data
    if hasattr(data, "element_spec") and hasattr(data, "take"):
        for element in data.take(1):
            return to_host(element_images(element)), data
        return None, data
    if inspect.isgenerator(data):
        first = next(data, None)
        if first is None:
            return None, iter(())

        def with_first_batch():
            yield first
            yield from data

        return to_host(element_images(first)), with_first_batch()
    return None, data


def check_pixel_values(model, values, name="x"):
    """Float images of the first batch must be finite and normalised (not on a
    0-255 scale), unless the model's augmentation normalises them."""
    if values is None or not np.issubdtype(values.dtype, np.floating) or not values.size:
        return
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise ValueError(
            f"the first batch of {name} holds {bad} non-finite pixel value(s) (NaN or "
            f"inf) out of {values.size}: every loss would be NaN. Find and drop or "
            "repair the damaged images (e.g. keep images[np.isfinite(images).all("
            "axis=(1, 2, 3))]), then run again."
        )
    largest = float(np.max(values))
    if (
        largest <= NORMALIZED_LIMIT
        or model.augmentation is not None
        and has_normalization(model.augmentation)
    ):
        return
    problem = (
        f"images of {name} are floats on a 0-255 scale (the first batch reaches "
        f"{largest:g}; normalised pixels stay within [-{NORMALIZED_LIMIT:g}, "
        f"{NORMALIZED_LIMIT:g}])"
    )
    fix = (
        "Rescale them to [0, 1]: images / 255 for arrays, dataset.map(lambda x, y: "
        "(x / 255, y)) for keras.utils.image_dataset_from_directory, or add "
        "keras.layers.Rescaling(1 / 255) to the MaskedAutoencoder's augmentation."
    )
    if model.augmentation is None:
        raise ValueError(
            f"{problem} and the model has no augmentation to normalise them: it would "
            f"regress raw pixel values (a loss in the thousands). {fix}"
        )
    if not model.warned_unnormalized:
        model.warned_unnormalized = True
        warnings.warn(
            f"{problem} and the model's augmentation {model.augmentation.name!r} holds "
            "no keras.layers.Rescaling or Normalization: unless one of its own layers "
            f"normalises, the model regresses raw pixel values. {fix}",
            stacklevel=3,
        )
