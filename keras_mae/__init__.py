"""keras-mae: Masked Autoencoders (He et al., 2021) for Keras 3.

Runs on TensorFlow, JAX and PyTorch. The package is built in floors, each
importing only those below it:

- `kernels`: backend fast paths, each next to its `keras.ops` reference;
- `layers`: patching, patch embedding, cls token, masking, ViT block, pooling,
  RandomResizedCrop (`keras` and `keras.ops` only);
- `models`: `MAEEncoder`, `MAEDecoder`, `MaskedAutoencoder`, presets;
- `weights`: official and Hugging Face checkpoints (given the class to fill);
- `data`: digits, image folders, tf.data pipelines (imported on demand);
- `recipes`: optimizers, schedules, callbacks, pre-training, linear probe,
  fine-tuning;
- `distribute`: each backend's multi-device machinery (imported on demand).

`import keras_mae` registers every serialisable class (layers, models, the
fine-tuning classifier, optimizers, schedules), so `keras.models.load_model` reads any file the
package wrote; `keras_mae.load_model(path)` does the same after checking that the
file is a complete `.keras` archive.
"""

from keras_mae.layers import ClassToken
from keras_mae.layers import PatchEncoder
from keras_mae.layers import RandomMasking
from keras_mae.layers import RandomResizedCrop
from keras_mae.layers import TokenPooling
from keras_mae.layers import ViTBlock
from keras_mae.layers import patchify
from keras_mae.layers import sincos_position_table
from keras_mae.layers import unpatchify
from keras_mae.models import PRESETS
from keras_mae.models import MAEDecoder
from keras_mae.models import MAEEncoder
from keras_mae.models import MaskedAutoencoder
from keras_mae.recipes import finetune as _finetune  # registers AugmentedClassifier
from keras_mae.recipes import optimizers as _optimizers  # registers the optimizers
from keras_mae.recipes import schedules as _schedules  # registers WarmupCosine
from keras_mae.saving import load_model

__version__ = "0.3.0"
