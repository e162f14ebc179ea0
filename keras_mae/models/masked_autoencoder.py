import warnings

import keras
from keras import ops

from keras_mae import kernels
from keras_mae.kernels.precision import check_compute_dtype
from keras_mae.layers import checks
from keras_mae.layers.patching import check_image_shape
from keras_mae.layers.patching import patchify
from keras_mae.layers.patching import unpatchify
from keras_mae.layers.random_masking import RandomMasking
from keras_mae.layers.random_masking import check_mask_ratio
from keras_mae.layers.random_masking import check_noise_values
from keras_mae.layers.random_masking import num_kept
from keras_mae.models.base import PresetMixin
from keras_mae.models.base import dtype_config
from keras_mae.models.mae_decoder import MAEDecoder
from keras_mae.models.mae_encoder import MAEEncoder

NORM_PIX_EPSILON = 1e-6
# Layers that bring integer pixels (0-255) to a small float range.
NORMALIZING_LAYERS = (keras.layers.Rescaling, keras.layers.Normalization)


def check_arguments(
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
):
    """Every constructor argument, under the name the caller used, before any layer exists."""
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


def has_normalization(layer):
    """Whether `layer` is, or contains (through `.layers`), a Rescaling or Normalization."""
    if isinstance(layer, NORMALIZING_LAYERS):
        return True
    return any(has_normalization(inner) for inner in getattr(layer, "layers", ()))


def integer_images_message(dtype):
    return (
        f"images are {dtype} (integer pixels, e.g. 0-255) and the model has no "
        "augmentation to normalise them: it would regress raw pixel values (a loss in "
        "the thousands). Give floats in [0, 1] (e.g. images.astype('float32') / 255), "
        "or build the MaskedAutoencoder with augmentation=keras.Sequential([..., "
        "keras.layers.Rescaling(1 / 255)]) or a keras.layers.Normalization, which "
        "normalise inside the step."
    )


def dtype_name(dtype):
    return keras.backend.standardize_dtype(dtype)


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


def normalize_patches(patches):
    """Normalise each patch by its mean and unbiased variance (official norm_pix_loss)."""
    patches = ops.convert_to_tensor(patches)
    count = patches.shape[-1]
    mean = ops.mean(patches, axis=-1, keepdims=True)
    var = ops.sum(ops.square(patches - mean), axis=-1, keepdims=True) / (count - 1)
    return (patches - mean) / ops.sqrt(var + NORM_PIX_EPSILON)


def masked_patch_loss(target, pred, mask):
    """Mean over masked patches of the per-patch mean squared error (float32)."""
    target = ops.cast(target, "float32")
    pred = ops.cast(pred, "float32")
    mask = ops.cast(mask, "float32")
    per_patch = ops.mean(ops.square(pred - target), axis=-1)  # (B, L)
    count = ops.sum(mask)
    # ones_like, not the Python 1.0: under torch a Python scalar is uploaded to the
    # GPU, a host-device sync every step.
    return ops.sum(per_patch * mask) / ops.maximum(count, ops.ones_like(count))


@keras.saving.register_keras_serializable(package="keras_mae")
class MaskedAutoencoder(PresetMixin, keras.Model):
    """Masked Autoencoder (He et al., 2021, https://arxiv.org/abs/2111.06377).

    Masks a random `mask_ratio` of the patches of each image, encodes the visible
    ones with a ViT (`self.encoder`, a `keras_mae.MAEEncoder`), reconstructs every
    patch with a light decoder, and trains on the mean squared error of the
    masked patches. The training step is Keras' own, so `fit` runs unchanged (and
    jit-compiled) on TensorFlow, JAX and PyTorch, from numpy arrays or `tf.data`
    yielding images or `(images, labels)` (labels are ignored).

    Args:
        image_shape: tuple `(H, W, C)`; H and W multiples of `patch_size`.
        patch_size: int, side of a square patch.
        hidden_dim: int, encoder width.
        num_layers: int, encoder blocks.
        num_heads: int, encoder attention heads.
        mlp_ratio: float, MLP width over the block width. Defaults to 4.0.
        decoder_hidden_dim: int. Defaults to 512.
        decoder_num_layers: int. Defaults to 8.
        decoder_num_heads: int. Defaults to 16.
        mask_ratio: float in (0, 1), fraction of patches removed; it must keep
            one patch visible and mask one (`1 <= int(L * (1 - mask_ratio)) < L`).
            Defaults to 0.75.
        norm_pix_loss: bool, regress each patch normalised by its own mean and
            (unbiased) variance. Defaults to False.
        layer_norm_epsilon: float. Defaults to 1e-6.
        seed: int or None, seed of the masking noise.
        augmentation: optional Keras layer (e.g. a `keras.Sequential` of
            `keras_mae.RandomResizedCrop`, `keras.layers.RandomFlip` and
            `keras.layers.Normalization`) applied to the inputs on every call,
            inside the compiled step, so augmentation runs on the accelerator
            under every backend and `fit` can take raw `uint8` images; its random
            layers act only when training. Its output must be `image_shape`, and
            the loss regresses the augmented images. It is built here for inputs
            of `image_shape` unless already built. The exported `encoder` does
            not include it. Defaults to None (inputs used as given).
        attention_padding: `"auto"`, None or int >= 2, for every block; see
            `keras_mae.ViTBlock`. Defaults to `"auto"`.
        remat: bool, activation checkpointing in every encoder and decoder
            block (see `keras_mae.ViTBlock`): less memory, one more forward
            pass of the blocks per step, the same gradients. Defaults to False.
        dtype: dtype policy, e.g. `"mixed_bfloat16"`; the loss is float32.
            float16 compute (`"mixed_float16"`) is refused under JAX on a CPU,
            where XLA cannot run it; `"mixed_bfloat16"` works there.

    Images are floats (e.g. in [0, 1]) or, with an `augmentation` that
    normalises them (a `keras.layers.Rescaling` or `Normalization`), integers
    such as `uint8`. Integer images without an augmentation are refused with a
    `ValueError` (never trained on as raw 0-255 values); with an augmentation
    that holds no such layer, a warning says so. `fit` and `evaluate` also
    refuse empty arrays ("0 images") before any step.

    Call arguments:
        inputs: images `(batch, H, W, C)`, or a dict with `"images"` and,
            optionally, `"noise"`.
        noise: optional `(batch, L)` noise making the mask deterministic (the
            official semantics: the `len_keep` smallest values are kept);
            exactly one finite row per image (not broadcast).

    Returns:
        A dict: `"pred"` `(batch, L, p*p*C)`, `"mask"` `(batch, L)` (1 = removed),
        `"ids_restore"` `(batch, L)`, `"latent"` `(batch, 1 + len_keep,
        hidden_dim)` and, with an `augmentation`, `"images"`: the augmented
        images the encoder saw (the loss's target).

    Example:
    >>> mae = MaskedAutoencoder.from_preset("mae_vit_micro_patch2")
    >>> mae.compile(optimizer=keras.optimizers.AdamW(1e-3, beta_2=0.95))
    >>> mae.fit(images, epochs=1)  # images: (N, 8, 8, 1)
    >>> features = mae.encoder.predict(images)  # (N, 17, 64)
    """

    def __init__(
        self,
        image_shape,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_ratio=4.0,
        decoder_hidden_dim=512,
        decoder_num_layers=8,
        decoder_num_heads=16,
        mask_ratio=0.75,
        norm_pix_loss=False,
        layer_norm_epsilon=1e-6,
        seed=None,
        augmentation=None,
        attention_padding="auto",
        remat=False,
        dtype=None,
        **kwargs,
    ):
        check_arguments(
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
        )
        # Inputs are not autocast (each layer casts its own): `noise` rounded to
        # a half-precision compute dtype would tie values and change the mask.
        kwargs.setdefault("autocast", False)
        super().__init__(dtype=dtype, **kwargs)
        check_compute_dtype(self.dtype_policy, "the MaskedAutoencoder")
        if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
            raise TypeError(
                "augmentation must be a Keras layer (e.g. keras.Sequential([...])) or "
                f"None. Received: augmentation={augmentation!r}"
            )
        if augmentation is not None and not augmentation.built:
            # Built here, outside any traced step (jax cannot create variables
            # there); for inputs of another size, build it before passing it.
            augmentation.build((None, *tuple(image_shape)))
        self.augmentation = augmentation
        self.warned_unnormalized = False
        attention_padding = kernels.check_attention_padding(attention_padding)
        image_shape = tuple(image_shape)
        self.encoder = MAEEncoder(
            image_shape,
            patch_size,
            hidden_dim,
            num_layers,
            num_heads,
            mlp_ratio=mlp_ratio,
            layer_norm_epsilon=layer_norm_epsilon,
            attention_padding=attention_padding,
            remat=remat,
            dtype=dtype,
            name="encoder",
        )
        channels = image_shape[-1]
        if norm_pix_loss and patch_size * patch_size * channels < 2:
            raise ValueError(
                "norm_pix_loss needs patches of 2 or more values to normalise; "
                f"received patch_size={patch_size} with {channels} channel(s)."
            )
        num_patches = self.encoder.num_patches
        len_keep = num_kept(num_patches, mask_ratio)
        self.masking = RandomMasking(mask_ratio, seed=seed, dtype=dtype, name="masking")
        self.decoder = MAEDecoder(
            self.encoder.grid_size,
            patch_size * patch_size * channels,
            hidden_dim=decoder_hidden_dim,
            num_layers=decoder_num_layers,
            num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
            layer_norm_epsilon=layer_norm_epsilon,
            attention_padding=attention_padding,
            remat=remat,
            dtype=dtype,
            name="decoder",
        )
        self.decoder.build((None, 1 + len_keep, hidden_dim), (None, num_patches))

        self.image_shape = image_shape
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.decoder_hidden_dim = decoder_hidden_dim
        self.decoder_num_layers = decoder_num_layers
        self.decoder_num_heads = decoder_num_heads
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed
        self.attention_padding = attention_padding
        self.remat = remat
        self.num_patches = num_patches
        self.built = True

    def build(self, input_shape=None):
        # Every weight exists from construction; nothing depends on the input.
        self.built = True

    def unpack_inputs(self, inputs, noise=None):
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"images", "noise"}
            if "images" not in inputs or unknown:
                raise ValueError(
                    "a dict input must hold 'images' and optionally 'noise'. "
                    f"Received keys: {sorted(inputs)}"
                )
            images = inputs["images"]
            noise = inputs.get("noise", noise)
        else:
            images = inputs
        self.check_pixel_dtype(images.dtype)
        if self.augmentation is None:
            self.check_images(images)
        return images, noise

    def check_pixel_dtype(self, dtype):
        """Integer images need a normalising augmentation: refused without one."""
        if keras.backend.is_float_dtype(dtype_name(dtype)):
            return
        if self.augmentation is None:
            raise ValueError(integer_images_message(dtype_name(dtype)))
        if not has_normalization(self.augmentation) and not self.warned_unnormalized:
            self.warned_unnormalized = True
            warnings.warn(
                f"images are {dtype_name(dtype)} (integer pixels) and the model's "
                f"augmentation {self.augmentation.name!r} holds no keras.layers.Rescaling "
                "or Normalization: unless one of its own layers normalises, the model "
                "regresses raw pixel values. Add keras.layers.Rescaling(1 / 255) (or a "
                "Normalization) at its end.",
                stacklevel=2,
            )

    def check_data(self, data, name="x", method="fit"):
        """Refuse empty or integer (un-normalised) data, or non-finite noise,
        before `fit`/`evaluate` starts."""
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
        self.check_pixel_dtype(dtype)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' `fit`, after refusing empty or un-normalised integer images."""
        self.check_data(x)
        if kwargs.get("validation_data") is not None:
            self.check_data(kwargs["validation_data"], "validation_data")
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Keras' `evaluate`, after refusing empty or un-normalised integer images."""
        self.check_data(x, method="evaluate")
        return super().evaluate(x, y, *args, **kwargs)

    def check_images(self, images):
        if len(images.shape) != 4 or tuple(images.shape[1:]) != self.image_shape:
            got = tuple(images.shape[1:]) if len(images.shape) == 4 else tuple(images.shape)
            if len(images.shape) == 4 and images.shape[-1] != self.image_shape[-1]:
                problem = (
                    f"images have {images.shape[-1]} channel(s) but the model expects "
                    f"{self.image_shape[-1]}"
                )
            else:
                problem = f"images of shape {got} do not match the model"
            raise ValueError(
                f"{problem}: expected batches of shape (batch, "
                f"{', '.join(map(str, self.image_shape))}), from "
                f"image_shape={self.image_shape}. Resize or convert the images, or "
                "build the model with the matching image_shape."
                + (" (checked after the model's augmentation)" if self.augmentation else "")
            )

    def call(self, inputs, noise=None, training=None):
        images, noise = self.unpack_inputs(inputs, noise)
        if self.augmentation is not None:
            # Keras' random image layers default to training=True: pass a bool.
            images = self.augmentation(images, training=bool(training))  # (B, H, W, C)
            self.check_images(images)
        tokens = self.encoder.patch_encoder(images)  # (B, L, D)
        visible, mask, ids_restore = self.masking(tokens, noise=noise)
        latent = self.encoder.encode_tokens(visible, training=training)  # (B, 1+K, D)
        pred = self.decoder(latent, ids_restore, training=training)  # (B, L, p*p*C)
        outputs = {"pred": pred, "mask": mask, "ids_restore": ids_restore, "latent": latent}
        if self.augmentation is not None:
            outputs["images"] = images
        return outputs

    def target_patches(self, images):
        """The regression target: float32 patches, normalised if `norm_pix_loss`."""
        target = patchify(ops.cast(images, "float32"), self.patch_size)  # (B, L, ppC)
        return normalize_patches(target) if self.norm_pix_loss else target

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images, _ = self.unpack_inputs(x)
        if y_pred is None:
            y_pred = self(x, training=training)
        images = y_pred.get("images", images)  # the augmented images, if any
        loss = masked_patch_loss(self.target_patches(images), y_pred["pred"], y_pred["mask"])
        if self.losses:
            loss = loss + ops.sum(ops.stack([ops.cast(extra, "float32") for extra in self.losses]))
        # Under tf.distribute each replica's gradients are summed: scale the loss
        # as Keras losses do, so the update equals one device's.
        return kernels.scale_loss_for_replicas(loss)

    def train_step(self, *args):
        """Keras' training step (JAX: `(state, data)`, the others: `(data)`);
        under PyTorch one with no host-device wait (`keras_mae.kernels.train_step`:
        the same numbers)."""
        return kernels.train_step(self, *args)

    def reconstruct(self, images, noise=None):
        """Pictures of what the model sees and what it fills in.

        With `norm_pix_loss`, predictions live in the per-patch normalised space;
        they are mapped back with the mean and standard deviation of each image's
        visible patches (information the model has), so the picture means
        something.

        Returns:
            A tuple `(masked, reconstruction)` of images `(batch, H, W, C)`:
            `masked` has removed patches zeroed; `reconstruction` pastes the
            predicted patches into the removed places and keeps the visible ones.
        """
        outputs = self(images, noise=noise, training=False)
        images = outputs.get("images", images)  # after the (inference) augmentation
        patches = patchify(ops.cast(images, "float32"), self.patch_size)  # (B, L, ppC)
        pred = ops.cast(outputs["pred"], "float32")
        mask = ops.cast(outputs["mask"], "float32")[:, :, None]  # (B, L, 1)
        if self.norm_pix_loss:
            visible = 1.0 - mask
            count = ops.sum(visible, axis=1, keepdims=True)  # (B, 1, 1)
            mean = ops.sum(ops.mean(patches, -1, keepdims=True) * visible, 1, keepdims=True)
            mean = mean / count
            var = ops.var(patches, axis=-1, keepdims=True)
            std = ops.sqrt(ops.sum(var * visible, 1, keepdims=True) / count + NORM_PIX_EPSILON)
            pred = pred * std + mean
        channels = self.image_shape[-1]
        grid = self.encoder.grid_size
        masked = unpatchify(patches * (1.0 - mask), grid, self.patch_size, channels)
        filled = patches * (1.0 - mask) + pred * mask
        return masked, unpatchify(filled, grid, self.patch_size, channels)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": dtype_config(self),
            "image_shape": self.image_shape,
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "decoder_hidden_dim": self.decoder_hidden_dim,
            "decoder_num_layers": self.decoder_num_layers,
            "decoder_num_heads": self.decoder_num_heads,
            "mask_ratio": self.mask_ratio,
            "norm_pix_loss": self.norm_pix_loss,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "seed": self.seed,
            "attention_padding": self.attention_padding,
            "remat": self.remat,
            "augmentation": (
                None
                if self.augmentation is None
                else keras.saving.serialize_keras_object(self.augmentation)
            ),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)
