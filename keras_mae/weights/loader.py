"""Load official MAE and Hugging Face ViTMAE checkpoints into keras-mae models.

encoder only). Hugging Face `ViTMAEForPreTraining` / `ViTMAEModel` directories
(`save_pretrained`: `config.json` + safetensors) hold the same weights under
other names, with q, k and v as three linears. Both are mapped onto the
official names first (`hf_to_official`) and then onto the Keras variables, so
there is one key map to trust. A checkpoint that does not fit the model is
refused as a whole, with the missing, unexpected and mis-shaped entries listed;
nothing is assigned until everything fits.


The class to fill comes from the caller (`MAEEncoder.from_official_checkpoint`,
`MaskedAutoencoder.from_official_checkpoint`, or `keras_mae.convert`, the
command line), so nothing here imports the models.
"""

from keras_mae.weights.assign import load_official_weights
from keras_mae.weights.config import build_config
from keras_mae.weights.hub import is_hub_name
from keras_mae.weights.hub import load_hub_checkpoint
from keras_mae.weights.readers import read_checkpoint


def load_checkpoint(path, cls, preset=None, **overrides):
    """A `cls` model with the weights of an official or Hugging Face checkpoint.

    Args:
        path: an official `.pth` (a `{"model": state_dict}` torch file, e.g.
            `mae_visualize_vit_base.pth` with encoder and decoder or
            `mae_pretrain_vit_base.pth` with the encoder only), a
            `.safetensors` file, a Hugging Face `save_pretrained` directory, or
            a Hub name `hf://ORG/NAME[@REVISION]` (`keras_mae.weights.hub`).
        cls: the class to build: `keras_mae.MaskedAutoencoder`,
            `keras_mae.MAEEncoder` or a subclass. An encoder takes full
            checkpoints too (the decoder entries are ignored, with a notice).
        preset: str or None, the architecture (a key of `keras_mae.PRESETS`).
            None reads a HF directory's `config.json`, or infers the
            architecture from the checkpoint's shapes (with a warning naming
            the settings the shapes do not tell). A preset that contradicts a
            `config.json` is refused, each conflicting field listed.
        **overrides: constructor arguments, e.g. `norm_pix_loss=True`, or
            `image_size=(256, 256)` (or `image_shape=(256, 256, 3)`): another
            resolution, to which the position tables are resampled. Those that
            contradict a `config.json`'s architecture are refused.

    Returns:
        The model, every weight assigned.
    """
    if is_hub_name(path):  # hf://ORG/NAME[@REVISION], through the Hugging Face cache
        return load_hub_checkpoint(path, cls, preset=preset, **overrides)
    state_dict, hf_config = read_checkpoint(path)
    config = build_config(state_dict, hf_config, preset, overrides, cls, source=repr(str(path)))
    model = cls(**config)
    return load_official_weights(model, state_dict, source=repr(str(path)))
