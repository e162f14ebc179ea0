import keras
import numpy as np

from keras_mae import kernels
from keras_mae.kernels.precision import check_compute_dtype
from keras_mae.layers.checks import ChecksInputsFirst
from keras_mae.layers.checks import check_transformer
from keras_mae.layers.class_token import ClassToken
from keras_mae.layers.patch_encoder import PatchEncoder
from keras_mae.layers.patching import check_image_shape
from keras_mae.layers.vit_block import ViTBlock
from keras_mae.models.base import PresetMixin
from keras_mae.models.base import dtype_config
from keras_mae.models.checks import check_images


def encode_tokens(tokens, class_token, blocks, norm, training=None):
    x = class_token(tokens)  # (B, 1 + K, D)
    for block in blocks:
        x = kernels.call_block(block, x, training)
    return norm(x)


@keras.saving.register_keras_serializable(package="keras_mae")
class MAEEncoder(ChecksInputsFirst, PresetMixin, keras.Model):
    """The MAE encoder, a plain ViT, as a functional Keras backbone.

    Maps images `(batch, H, W, C)` to tokens `(batch, 1 + L, hidden_dim)`: patch
    embedding + fixed sin-cos positions, a cls token first, `num_layers`
    pre-norm blocks and a final LayerNorm, with no masking. A
    `keras_mae.MaskedAutoencoder` owns one and runs the same layers on the visible
    patches only (`encode_tokens`), so `mae.encoder` is the pre-trained backbone
    with no export step. See https://arxiv.org/abs/2111.06377.

    Args:
        image_shape: tuple `(H, W, C)`; H and W multiples of `patch_size`.
        patch_size: int, side of a square patch.
        hidden_dim: int, token width (multiple of 4 and of `num_heads`).
        num_layers: int, transformer blocks.
        num_heads: int, attention heads.
        mlp_ratio: float, MLP width over `hidden_dim`. Defaults to 4.0.
        layer_norm_epsilon: float. Defaults to 1e-6.
        drop_path_rate: float, stochastic depth of the last block, rising linearly
            from 0 at the first (for fine-tuning). Defaults to 0.0.
        attention_padding: `"auto"`, None or int >= 2; see
            `keras_mae.ViTBlock`. Defaults to `"auto"`.
        remat: bool, activation checkpointing in every block (see
            `keras_mae.ViTBlock`): less memory in training, one more forward
            pass of the blocks per step, the same gradients. Defaults to False.
        dtype: dtype policy of the layers, e.g. `"mixed_bfloat16"`.

    Example:
    >>> encoder = MAEEncoder((32, 32, 3), patch_size=4, hidden_dim=64,
    ...                      num_layers=2, num_heads=4)
    >>> tuple(encoder(np.zeros((2, 32, 32, 3))).shape)
    (2, 65, 64)
    >>> classifier = keras.Sequential(
    ...     [encoder, keras_mae.TokenPooling("cls"), keras.layers.Dense(10)])

    Exporting it for serving (needs TensorFlow installed; onnx for the second line):

    ```python
    encoder.export("encoder_savedmodel")  # TensorFlow or JAX backend
    encoder.export("encoder.onnx", format="onnx")
    ```
    """

    def __init__(
        self,
        image_shape,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        drop_path_rate=0.0,
        attention_padding="auto",
        remat=False,
        dtype=None,
        **kwargs,
    ):
        image_shape = tuple(image_shape)
        check_image_shape(image_shape, patch_size)
        check_transformer(hidden_dim, num_layers, num_heads, mlp_ratio, layer_norm_epsilon)
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1. Received: num_layers={num_layers}")

        # === Layers ===
        # (kept in locals until the functional model exists: torch modules cannot
        # hold sub-modules before their own __init__)
        patch_encoder = PatchEncoder(patch_size, hidden_dim, dtype=dtype, name="patch_encoder")
        class_token = ClassToken(dtype=dtype, name="class_token")
        rates = np.linspace(0.0, drop_path_rate, num_layers)
        blocks = [
            ViTBlock(
                hidden_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                layer_norm_epsilon=layer_norm_epsilon,
                drop_path_rate=float(rates[i]),
                attention_padding=attention_padding,
                remat=remat,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="norm")

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        tokens = encode_tokens(patch_encoder(images), class_token, blocks, norm)
        super().__init__(inputs=images, outputs=tokens, dtype=dtype, **kwargs)
        if not self.trainable:
            # `trainable=False` from a config (a frozen encoder reloaded) sets only
            # the model's flag: freeze the layers built above too.
            for layer in self.layers:
                layer.trainable = False
        if dtype is not None:
            # A functional model drops `dtype`: keep the policy, so that the
            # config (and a reloaded encoder) has the layers' policy.
            self.dtype_policy = dtype
        check_compute_dtype(self.dtype_policy, "the MAEEncoder")
        self.patch_encoder = patch_encoder
        self.class_token = class_token
        self.blocks = blocks
        self.norm = norm

        # === Config ===
        self.image_shape = image_shape
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.layer_norm_epsilon = layer_norm_epsilon
        self.drop_path_rate = drop_path_rate
        self.attention_padding = kernels.check_attention_padding(attention_padding)
        self.remat = remat
        self.grid_size = self.patch_encoder.grid_size
        self.num_patches = self.patch_encoder.num_patches

    def check_inputs(self, images, *args, **kwargs):
        """Before Keras wraps the call (`ChecksInputsFirst`): images of another
        shape are refused with the expected one and the fix first."""
        if isinstance(images, dict):
            images = images.get("images")
        if hasattr(images, "shape"):
            check_images(self, images.shape)

    def encode_tokens(self, tokens, training=None):
        """Run cls token + blocks + norm on embedded patch tokens.

        Args:
            tokens: `(batch, K, hidden_dim)`, position-embedded patch tokens (all
                of them, or the visible ones after masking).

        Returns:
            `(batch, 1 + K, hidden_dim)`.
        """
        return encode_tokens(tokens, self.class_token, self.blocks, self.norm, training)

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Write the encoder for serving: images -> tokens, without Keras.

        `keras.Model.export`, with what each backend needs to export it
        (`keras_mae.kernels.export`); the artifact computes the encoder's
        outputs (within float32 rounding).

        Args:
            filepath: str, a folder (`"tf_saved_model"`) or a `.onnx` file.
            format: `"tf_saved_model"`, from the TensorFlow and JAX backends
                (JAX through `jax2tf`): load it with `tf.saved_model.load` and
                keep the loaded object while calling its `serve(images)`
                endpoint; or `"onnx"`, from every backend (TensorFlow needs
                `tf2onnx`, JAX `jax2onnx`, PyTorch `onnxscript`; the `export`
                extra), for `onnxruntime.InferenceSession(filepath)`. The
                batch size stays free in both.
            verbose: bool or None, as `keras.Model.export`.
            **kwargs: passed to `keras.Model.export`, e.g. `input_signature`.
        """
        return kernels.export(self, filepath, format=format, verbose=verbose, **kwargs)

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
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "drop_path_rate": self.drop_path_rate,
            "attention_padding": self.attention_padding,
            "remat": self.remat,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
