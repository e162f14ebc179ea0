import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mae")
class ClassToken(keras.layers.Layer):
    """Prepend a learned cls token to a token sequence.

    The token has shape `(1, 1, dim)` and is initialised from normal(std=0.02), as
    the official MAE. Its position row is zero, so nothing is added to it.

    Call arguments:
        tokens: `(batch, tokens, dim)`.

    Returns:
        `(batch, 1 + tokens, dim)`, the cls token first.

    Example:
    >>> tuple(ClassToken()(np.zeros((2, 4, 8))).shape)
    (2, 5, 8)
    """

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token",
            shape=(1, 1, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, tokens):
        cls = ops.cast(self.token, tokens.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(tokens)[0], 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def compute_output_shape(self, input_shape):
        batch, tokens, dim = input_shape
        return (batch, None if tokens is None else tokens + 1, dim)
