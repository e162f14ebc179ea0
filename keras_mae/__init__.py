"""keras-mae: Masked Autoencoders (He et al., 2021) for Keras 3.

Runs on TensorFlow, JAX and PyTorch; model code speaks only `keras` and
`keras.ops`.
"""

from keras_mae.class_token import ClassToken
from keras_mae.mae_decoder import MAEDecoder
from keras_mae.mae_encoder import MAEEncoder
from keras_mae.masked_autoencoder import MaskedAutoencoder
from keras_mae.patch_encoder import PatchEncoder
from keras_mae.patching import patchify
from keras_mae.patching import sincos_position_table
from keras_mae.patching import unpatchify
from keras_mae.presets import PRESETS
from keras_mae.random_masking import RandomMasking
from keras_mae.random_resized_crop import RandomResizedCrop
from keras_mae.token_pooling import TokenPooling
from keras_mae.vit_block import ViTBlock

__version__ = "0.1.0"
