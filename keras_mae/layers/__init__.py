"""The layers of MAE, in `keras` and `keras.ops` only.

- `patching`: `patchify`, `unpatchify`, the fixed 2-D sin-cos position table.
- `PatchEncoder`: patch embedding plus positions; `ClassToken`: the cls token.
- `RandomMasking`: per-sample random masking by argsort of noise.
- `ViTBlock`: the pre-norm transformer block.
- `TokenPooling`: cls token or mean of the patch tokens.
- `RandomResizedCrop`: the pre-training augmentation, inside the compiled step.
"""

from keras_mae.layers.class_token import ClassToken
from keras_mae.layers.patch_encoder import PatchEncoder
from keras_mae.layers.patching import patchify
from keras_mae.layers.patching import sincos_position_table
from keras_mae.layers.patching import unpatchify
from keras_mae.layers.random_masking import RandomMasking
from keras_mae.layers.random_resized_crop import RandomResizedCrop
from keras_mae.layers.token_pooling import TokenPooling
from keras_mae.layers.vit_block import ViTBlock
