"""Official MAE and Hugging Face ViTMAE weights for keras-mae models.

- `readers`: checkpoint files (PyTorch `.pth`, safetensors, Hugging Face
  `save_pretrained` directories) into `{name: float32 array}`.
- `key_map`: Hugging Face names onto the official ones.
- `position`: bicubic resampling of a position table to another grid.
- `config`: a model's constructor arguments from a preset, a `config.json` or
  the checkpoint's shapes.
- `assign`: the official names onto a model's variables, all or nothing.
- `loader`: `load_checkpoint(path, cls, preset=None, **overrides)`, the above
  in one call.

`python -m keras_mae.convert` (or the `keras-mae-convert` command) writes a
checkpoint out as a `.keras` file. Nothing here imports a model class: the
class to fill comes from the caller.
"""

from keras_mae.weights.assign import load_official_weights
from keras_mae.weights.assign import official_assignments
from keras_mae.weights.key_map import hf_to_official
from keras_mae.weights.loader import load_checkpoint
from keras_mae.weights.position import resample_position_table
from keras_mae.weights.readers import read_checkpoint
