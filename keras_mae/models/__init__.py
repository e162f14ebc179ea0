"""The MAE models: the encoder backbone, the decoder, the pre-training model.

- `MAEEncoder`: the ViT encoder as a plain functional Keras backbone.
- `MAEDecoder`: mask tokens, un-shuffling, decoder blocks, pixel head.
- `MaskedAutoencoder`: masking + encoder + decoder + the masked-patch loss.
- `PRESETS`: the named architectures; `base`: what the models share.
"""

from keras_mae.models.mae_decoder import MAEDecoder
from keras_mae.models.mae_encoder import MAEEncoder
from keras_mae.models.masked_autoencoder import MaskedAutoencoder
from keras_mae.models.presets import PRESETS
