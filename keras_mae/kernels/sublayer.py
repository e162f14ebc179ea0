from keras_mae.kernels.kernel import Kernel


def reference_call(layer, x):
    return layer(x)


def direct_call(layer, x):
    """`layer.call(x)` for a built sublayer, without `Layer.__call__`.

    Under eager PyTorch every `Layer.__call__` adds Python host time (input
    conversion, signature binding, call context, name and autocast scopes),
    six times per ViT block. The calling block has already cast its input to
    its compute dtype and entered its autocast scope, which its sublayers
    share (same dtype policy), so `layer.call(x)` computes the same numbers.
    Quantized sublayers take the full `__call__`; under a `keras.RematScope`
    the calling block is rematerialised as a whole.
    """
    if layer.quantization_mode is not None:
        return layer(x)
    return layer.call(x)


call_sublayer = Kernel("call_sublayer", reference_call, torch=direct_call)
