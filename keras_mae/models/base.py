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
        """A model with the architecture of a named preset, or a Hub model.

        Args:
            name: a key of `keras_mae.PRESETS` (an untrained model):
                `"mae_vit_base_patch16"`, `"mae_vit_large_patch16"`,
                `"mae_vit_huge_patch14"` (official), `"mae_vit_tiny_patch4"`
                (32x32), `"mae_vit_micro_patch2"` (8x8). Or a Hugging Face ViTMAE
                repository, `"hf://ORG/NAME"` or `"hf://ORG/NAME@REVISION"`
                (e.g. `"hf://facebook/vit-mae-base"`): its architecture and
                weights, fetched through the Hugging Face cache (needs
                `pip install "keras-mae[hub]"`; see
                `keras_mae.weights.hub.load_hub_checkpoint`).
            **overrides: constructor arguments replacing the preset's, e.g.
                `norm_pix_loss=True` or `image_shape=(64, 64, 3)`. For a Hub
                model, only settings that are not the architecture
                (`mask_ratio`, `norm_pix_loss`, `dtype`, `image_size`, ...), and
                the download options `revision`, `cache_dir`, `token`,
                `local_files_only`, `force_download`.

        Example:

        ```python
        mae = MaskedAutoencoder.from_preset("mae_vit_base_patch16",
                                            norm_pix_loss=True)
        mae = MaskedAutoencoder.from_preset("hf://facebook/vit-mae-base")
        ```
        """
        from keras_mae.weights import hub

        if hub.is_hub_name(name):
            return hub.load_hub_checkpoint(name, cls, **overrides)
        options = sorted(set(overrides) & set(hub.HUB_OPTIONS))
        if options:
            raise ValueError(
                f"{', '.join(options)} apply to Hugging Face Hub names ('hf://ORG/NAME'), "
                f"not to the built-in preset {name!r}. Drop them, or name a Hub repository."
            )
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

        ```python
        mae = MaskedAutoencoder.from_official_checkpoint(
            "mae_visualize_vit_base.pth", preset="mae_vit_base_patch16")
        encoder = MAEEncoder.from_official_checkpoint(
            "mae_pretrain_vit_base.pth", preset="mae_vit_base_patch16")
        ```
        """
        from keras_mae.weights.loader import load_checkpoint

        return load_checkpoint(path, cls, preset=preset, **overrides)

    def export_to_transformers(self, directory):
        """Write this model as a Hugging Face transformers ViTMAE directory.

        A `MaskedAutoencoder` becomes a `ViTMAEForPreTraining`, a `MAEEncoder` a
        `ViTMAEModel`: `config.json` and `model.safetensors` (float32), which
        `transformers.ViTMAEForPreTraining.from_pretrained(directory)` (or
        `ViTMAEModel`'s) reads, and `from_official_checkpoint` reads back. Needs
        the `safetensors` package, not torch. See
        `keras_mae.weights.hf_export.export_to_transformers`.

        Example:

        ```python
        mae.export_to_transformers("vit-mae-mine")
        ```
        """
        from keras_mae.weights.hf_export import export_to_transformers

        return export_to_transformers(self, directory)
