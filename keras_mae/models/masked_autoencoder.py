"""`MaskedAutoencoder`: masking + encoder + decoder + the masked-patch loss.

He et al., "Masked Autoencoders Are Scalable Vision Learners" (2021),
https://arxiv.org/abs/2111.06377. The methods follow the paper's steps, as the
official `models_mae.py` does: patchify, random masking, the encoder on the
visible patches, the decoder on every position, the loss on the masked patches.
The checks of arguments and data live in `keras_mae.models.checks`.
"""

import keras
from keras import ops

from keras_mae import kernels
from keras_mae.layers.checks import ChecksInputsFirst
from keras_mae.layers.patching import patchify
from keras_mae.layers.patching import unpatchify
from keras_mae.layers.random_masking import RandomMasking
from keras_mae.layers.random_masking import num_kept
from keras_mae.models import checks
from keras_mae.models.base import PresetMixin
from keras_mae.models.base import dtype_config
from keras_mae.models.mae_decoder import MAEDecoder
from keras_mae.models.mae_encoder import MAEEncoder

NORM_PIX_EPSILON = 1e-6
# The constructor arguments that `get_config` returns as they are, in its order, after
# name, trainable and dtype and before augmentation: the keys of saved `.keras` files.
CONFIG_KEYS = tuple(
    """image_shape patch_size hidden_dim num_layers num_heads mlp_ratio decoder_hidden_dim
    decoder_num_layers decoder_num_heads mask_ratio norm_pix_loss layer_norm_epsilon seed
    attention_padding remat""".split()
)


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


def built_for(augmentation, image_shape):
    """`augmentation` built for inputs of `image_shape` unless already built.

    Built at construction, outside any traced step (JAX cannot create variables
    there); for inputs of another size, build it before passing it.
    """
    if augmentation is not None and not augmentation.built:
        augmentation.build((None, *image_shape))
    return augmentation


@keras.saving.register_keras_serializable(package="keras_mae")
class MaskedAutoencoder(ChecksInputsFirst, PresetMixin, keras.Model):
    """Masked Autoencoder (He et al., 2021, https://arxiv.org/abs/2111.06377).

    Each call masks a random `mask_ratio` of the patches of each image, encodes
    the visible ones with a ViT (`self.encoder`, a `keras_mae.MAEEncoder`), and
    reconstructs the pixels of every patch with a light decoder
    (`self.decoder`, a `keras_mae.MAEDecoder`); the loss (`compute_loss`) is the
    mean squared error over the masked patches, in float32.

    `fit` is Keras' training loop on every backend, from arrays or `tf.data`
    yielding images, `{"images", "noise"}` dicts or `(images, labels)` (labels
    are ignored); its step is `keras_mae.kernels.train_step` (Keras' own, or
    under PyTorch with Adam or AdamW the same numbers with no host-device wait).
    `fit` and `evaluate` first refuse empty data, non-finite noise, and integer
    images (e.g. `uint8`) without an `augmentation` to normalise them (with one
    that holds no `keras.layers.Rescaling` or `Normalization`, a warning).

    Args:
        image_shape: tuple `(H, W, C)`; H and W multiples of `patch_size`.
        patch_size: int, side of a square patch.
        hidden_dim: int, encoder width (a multiple of 4 and of `num_heads`).
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
        seed: int or None, seed of the masking noise. Defaults to None.
        augmentation: optional Keras layer (e.g. a `keras.Sequential` of
            `keras_mae.RandomResizedCrop`, `RandomFlip` and `Normalization`) run
            on the inputs inside the compiled step (its random layers only when
            training), so `fit` can take raw `uint8` images. It outputs
            `image_shape`, the loss's target; `encoder` does not include it.
            Built here for `image_shape` unless built. Defaults to None.
        attention_padding: `"auto"`, None or int >= 2, for every block; see
            `keras_mae.ViTBlock`. Defaults to `"auto"`.
        remat: bool, activation checkpointing in every block (see
            `keras_mae.ViTBlock`): less memory, the same gradients. Defaults to False.
        dtype: dtype policy, e.g. `"mixed_bfloat16"`; the loss is float32.
            `"mixed_float16"` is refused under JAX on a CPU (XLA cannot run it).

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
    >>> images = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    >>> mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_micro_patch2", seed=0)
    >>> mae.compile(optimizer=keras.optimizers.AdamW(1e-3, beta_2=0.95))
    >>> history = mae.fit(images, batch_size=4, epochs=1, verbose=0)
    >>> mae.encoder.predict(images, verbose=0).shape  # the cls token + 16 patches
    (8, 17, 64)
    >>> masked, reconstruction = mae.reconstruct(images[:2])
    >>> tuple(reconstruction.shape)
    (2, 8, 8, 1)
    """

    # Set once the model has warned about integer images it may not normalise.
    warned_unnormalized = False

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
        # The arguments that are the config (`CONFIG_KEYS`), by name, before any layer exists.
        config = {key: value for key, value in locals().items() if key in CONFIG_KEYS}
        checks.check_arguments(**config, augmentation=augmentation, dtype=dtype)
        # Inputs are not autocast (each layer casts its own): `noise` rounded to
        # a half-precision compute dtype would tie values and change the mask.
        kwargs.setdefault("autocast", False)
        super().__init__(dtype=dtype, **kwargs)
        config["image_shape"] = image_shape = tuple(image_shape)
        # An int if one: the config saves what the blocks use.
        config["attention_padding"] = kernels.check_attention_padding(attention_padding)

        # === Layers ===
        self.augmentation = built_for(augmentation, image_shape)
        blocks = {  # what the encoder's and the decoder's blocks share
            "mlp_ratio": mlp_ratio,
            "layer_norm_epsilon": layer_norm_epsilon,
            "attention_padding": config["attention_padding"],
            "remat": remat,
            "dtype": dtype,
        }
        self.encoder = MAEEncoder(
            image_shape, patch_size, hidden_dim, num_layers, num_heads, name="encoder", **blocks
        )
        self.masking = RandomMasking(mask_ratio, seed=seed, dtype=dtype, name="masking")
        self.decoder = MAEDecoder(
            self.encoder.grid_size,
            patch_size * patch_size * image_shape[-1],  # values per patch, p*p*C
            hidden_dim=decoder_hidden_dim,
            num_layers=decoder_num_layers,
            num_heads=decoder_num_heads,
            name="decoder",
            **blocks,
        )
        num_patches = self.encoder.num_patches
        len_keep = num_kept(num_patches, mask_ratio)
        self.decoder.build((None, 1 + len_keep, hidden_dim), (None, num_patches))

        # === Config ===
        for key, value in config.items():
            setattr(self, key, value)
        self.num_patches = num_patches
        self.built = True

    def build(self, input_shape=None):
        # Every weight exists from construction; nothing depends on the input.
        self.built = True

    def check_inputs(self, inputs, noise=None, **kwargs):
        """Before Keras wraps the call (`ChecksInputsFirst`): the errors' first
        line is the message."""
        checks.check_call_inputs(self, inputs, noise)

    def unpack_inputs(self, inputs, noise=None):
        """`(images, noise)` of a call's inputs."""
        if isinstance(inputs, dict):
            return inputs["images"], inputs.get("noise", noise)
        return inputs, noise

    def call(self, inputs, noise=None, training=None):
        images, noise = self.unpack_inputs(inputs, noise)
        if self.augmentation is not None:
            # Keras' random image layers default to training=True: pass a bool.
            images = self.augmentation(images, training=bool(training))  # (B, H, W, C)
            checks.check_images(self, images.shape, augmented=True)
        # Patchify, embed, add the sin-cos positions.
        tokens = self.encoder.patch_encoder(images)  # (B, L, D)
        # Random masking: keep len_keep = K tokens per image.
        visible, mask, ids_restore = self.masking(tokens, noise=noise)  # (B, K, D)
        latent = self.encoder.encode_tokens(visible, training=training)  # (B, 1+K, D)
        pred = self.decoder(latent, ids_restore, training=training)  # (B, L, p*p*C)
        outputs = {"pred": pred, "mask": mask, "ids_restore": ids_restore, "latent": latent}
        if self.augmentation is not None:
            outputs["images"] = images
        return outputs

    def target_patches(self, images):
        """The regression target: float32 patches, normalised if `norm_pix_loss`."""
        target = patchify(ops.cast(images, "float32"), self.patch_size)  # (B, L, p*p*C)
        return normalize_patches(target) if self.norm_pix_loss else target

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The mean squared error of the masked patches (plus any layer losses)."""
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
        patches = patchify(ops.cast(images, "float32"), self.patch_size)  # (B, L, p*p*C)
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
        return masked, unpatchify(filled, grid, self.patch_size, channels)  # (B, H, W, C)

    # === Checks of the data ===

    # Keras calls no public hook with the data before it converts it and builds
    # the step (`make_train_function` and callbacks never see it; empty arrays
    # fail inside its data adapters, differently per backend): so that bad data
    # is refused with a clear error before any work, these two thin overrides
    # run `checks.check_fit_data` and are otherwise Keras' own.
    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' `fit`, after refusing empty, un-normalised or non-finite images."""
        x, validation_data = checks.check_fit_data(self, "fit", x, kwargs.get("validation_data"))
        if validation_data is not None:
            kwargs["validation_data"] = validation_data
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """Keras' `evaluate`, after refusing empty, un-normalised or non-finite images."""
        x, _ = checks.check_fit_data(self, "evaluate", x)
        return super().evaluate(x, y, *args, **kwargs)

    # === Config ===

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": dtype_config(self),
            **{key: getattr(self, key) for key in CONFIG_KEYS},
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
