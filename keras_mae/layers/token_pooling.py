import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mae")
class TokenPooling(keras.layers.Layer):
    """Pool encoder tokens `(batch, 1 + L, dim)` into one vector per image.

    Args:
        mode: `"cls"` takes the cls token (first token; the linear-probe
            protocol of MAE), `"mean"` averages the patch tokens, leaving out the
            cls token (the fine-tuning protocol). Defaults to `"cls"`.

    Returns:
        `(batch, dim)`.

    Example:
    >>> tuple(TokenPooling("mean")(np.ones((2, 5, 8))).shape)
    (2, 8)
    """

    def __init__(self, mode="cls", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("cls", "mean"):
            raise ValueError(f"mode must be 'cls' or 'mean'. Received: mode={mode!r}")
        self.mode = mode

    def call(self, tokens):
        if self.mode == "cls":
            return tokens[:, 0]
        return ops.mean(tokens[:, 1:], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config
