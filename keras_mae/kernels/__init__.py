"""Backend fast paths, each next to the `keras.ops` reference it must equal.

Layers and models call these functions and never ask which backend runs. Each
is a `Kernel`: a reference written in `keras.ops` and optional per-backend
implementations, one of which is chosen once, when this package is imported
(the Keras backend is fixed by then). `tests/kernels/` checks on every backend
that the chosen implementation equals the reference in values and gradients.

- `attention`: reference `ops.dot_product_attention`; JAX: zero-pads the
  tokens to a multiple of 64 for half-precision inputs on a GPU, where cuDNN
  flash attention then applies.
- `layer_norm`: reference Keras' `LayerNormalization`; JAX and TensorFlow:
  centre once, then scale (fewer XLA temporaries); PyTorch: the layer's `call`.
- `gelu`: reference `ops.gelu(approximate=False)`; JAX and TensorFlow: through
  `erf` rather than `erfc`.
- `call_sublayer`: reference `layer(x)`; PyTorch: `layer.call(x)`, skipping
  the host time of `Layer.__call__`.
- `attention_branch`, `mlp_branch`: reference the `ViTBlock` branches written
  with the kernels above; PyTorch: torch called directly on the sublayers'
  variables (`F.layer_norm`, `torch.addmm`, `F.scaled_dot_product_attention`,
  `F.gelu`), skipping the host time of 17 `keras.ops` calls per block.
- `call_block`: reference `block(x, training=training)`; PyTorch: the block's
  computation without `Layer.__call__` when the input is a tensor in the
  compute dtype and `training` is explicit.
- `scale_loss_for_replicas`: reference the loss as is; TensorFlow: divided by
  the `tf.distribute` replica count.
- `uniform_noise`: reference `keras.random.uniform` from a `SeedGenerator`;
  PyTorch: the same numbers without reading the seed state on the host.
- `host_copy`: reference a read of the tensor when asked; PyTorch: a CPU
  tensor read where it lies, a CUDA one copied to pinned memory behind the
  step, its arrival asked without waiting (a per-batch check of the loss).
- `train_step`: reference Keras' own `train_step`; PyTorch: the same step with
  no host-device wait (the loss tracker and the Adam/AdamW update use no
  Python number as a tensor).

`KERAS_MAE_KERNELS=reference` in the environment (read at import) selects
every reference instead, e.g. to rule a fast path out when chasing a numerical
difference; `references()` does the same inside a `with` block.

`export` writes a model for serving (`keras.Model.export`; under JAX traced
with the references, under PyTorch an ONNX file with a dynamic batch).

Private Keras (an attribute or method of Keras' own whose name starts with
`_`) is used only in this package, each use with a comment naming the Keras
behaviour it relies on; `compat` holds the ones the other subpackages need
(`variable_index`, `forget_layout`).
"""

from keras_mae.kernels.attention import attention
from keras_mae.kernels.attention import check_attention_padding
from keras_mae.kernels.attention import padded_attention
from keras_mae.kernels.block import attention_branch
from keras_mae.kernels.block import call_block
from keras_mae.kernels.block import mlp_branch
from keras_mae.kernels.export import export
from keras_mae.kernels.gelu import gelu
from keras_mae.kernels.host_copy import host_copy
from keras_mae.kernels.kernel import Kernel
from keras_mae.kernels.kernel import references
from keras_mae.kernels.layer_norm import layer_norm
from keras_mae.kernels.noise import uniform_noise
from keras_mae.kernels.replicas import scale_loss_for_replicas
from keras_mae.kernels.sublayer import call_sublayer
from keras_mae.kernels.train_step import train_step

KERNELS = (
    attention,
    layer_norm,
    gelu,
    call_sublayer,
    attention_branch,
    mlp_branch,
    call_block,
    scale_loss_for_replicas,
    uniform_noise,
    train_step,
    host_copy,
)

__all__ = [
    "KERNELS",
    "Kernel",
    "attention",
    "attention_branch",
    "call_block",
    "call_sublayer",
    "check_attention_padding",
    "export",
    "gelu",
    "host_copy",
    "layer_norm",
    "mlp_branch",
    "padded_attention",
    "references",
    "scale_loss_for_replicas",
    "train_step",
    "uniform_noise",
]
