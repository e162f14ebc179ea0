"""What the models share: their dtype policy in configs, and presets."""

import inspect

import keras

from keras_mae.models.presets import PRESETS
from keras_mae.models.presets import preset_config


def dtype_config(layer):
    """The serialised dtype policy of `layer`, for `get_config`."""
    return keras.dtype_policies.serialize(layer.dtype_policy)


class PresetMixin:
    """`from_preset` for a model class whose constructor takes preset keys.

    A preset (`keras_mae.PRESETS`) names a full MAE architecture; each class
    takes the entries its constructor accepts (an encoder ignores the
    decoder's).
    """

    presets = PRESETS

    @classmethod
    def constructor_arguments(cls):
        """The names of the arguments `cls(...)` takes (beyond `**kwargs`)."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD} - {"self"}

    @classmethod
    def preset_config(cls, name):
        """The constructor arguments of `cls` for preset `name` (a fresh dict)."""
        accepted = cls.constructor_arguments()
        return {k: v for k, v in preset_config(name).items() if k in accepted}

    @classmethod
    def from_preset(cls, name, **overrides):
        """An untrained model with the architecture of a named preset.

        Args:
            name: a key of `keras_mae.PRESETS`: `"mae_vit_base_patch16"`,
                `"mae_vit_large_patch16"`, `"mae_vit_huge_patch14"` (official),
                `"mae_vit_tiny_patch4"` (32x32), `"mae_vit_micro_patch2"` (8x8).
            **overrides: constructor arguments replacing the preset's, e.g.
                `norm_pix_loss=True` or `image_shape=(64, 64, 3)`.

        Example:
        >>> mae = MaskedAutoencoder.from_preset("mae_vit_base_patch16",
        ...                                     norm_pix_loss=True)
        """
        config = cls.preset_config(name)
        config.update(overrides)
        return cls(**config)

    @classmethod
    def from_official_checkpoint(cls, path, preset=None, **overrides):
        """A model with the weights of an official or Hugging Face checkpoint.

        Takes an official `{"model": state_dict}` torch file (reading it needs
        torch): `mae_visualize_vit_*.pth` holds encoder and decoder,
        `mae_pretrain_vit_*.pth` the encoder only (an encoder takes either;
        decoder entries are ignored with a notice). Or a Hugging Face
        `ViTMAEForPreTraining` / `ViTMAEModel` `save_pretrained` directory, or
        a `.safetensors` file. See `keras_mae.weights.load_checkpoint` for the
        arguments.

        Example:
        >>> mae = MaskedAutoencoder.from_official_checkpoint(
        ...     "mae_visualize_vit_base.pth", preset="mae_vit_base_patch16")
        >>> encoder = MAEEncoder.from_official_checkpoint(
        ...     "mae_pretrain_vit_base.pth", preset="mae_vit_base_patch16")
        """
        from keras_mae.weights.loader import load_checkpoint

        return load_checkpoint(path, cls, preset=preset, **overrides)
