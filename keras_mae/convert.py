"""Convert an official MAE checkpoint or a Hugging Face ViTMAE directory to `.keras`.

Command line (prints the model's parameter count and where it wrote the file):

    python -m keras_mae.convert mae_visualize_vit_base.pth \
        --preset mae_vit_base_patch16 --output mae_vit_base.keras
    python -m keras_mae.convert mae_pretrain_vit_base.pth --encoder-only \
        --preset mae_vit_base_patch16 --output vit_base_encoder.keras
    python -m keras_mae.convert ./vit-mae-base --output mae.keras  # HF directory
    python -m keras_mae.convert hf://facebook/vit-mae-base --output mae.keras  # the Hub
    python -m keras_mae.convert mae.keras --to transformers --output vit-mae-mine  # HF dir

`keras-mae-convert` (installed with the package) is the same command. The
loading itself is `keras_mae.weights`; in Python, use
`MaskedAutoencoder.from_official_checkpoint` and
`MAEEncoder.from_official_checkpoint`, and `model.export_to_transformers(directory)`.
"""

import argparse

import numpy as np

from keras_mae.models.mae_encoder import MAEEncoder
from keras_mae.models.masked_autoencoder import MaskedAutoencoder
from keras_mae.models.presets import PRESETS
from keras_mae.saving import load_model
from keras_mae.weights.hf_export import export_to_transformers
from keras_mae.weights.loader import load_checkpoint


def load_masked_autoencoder(path, preset=None, cls=MaskedAutoencoder, **overrides):
    """A `MaskedAutoencoder` with the weights of a full official or HF checkpoint.

    See `keras_mae.weights.loader.load_checkpoint` for the arguments.
    """
    return load_checkpoint(path, cls, preset=preset, **overrides)


def load_encoder(path, preset=None, cls=MAEEncoder, **overrides):
    """A `MAEEncoder` with the weights of an official or HF checkpoint.

    Takes encoder-only checkpoints (`mae_pretrain_vit_*.pth`, `ViTMAEModel`) and
    full ones (the decoder entries are then ignored, with a notice).
    """
    return load_checkpoint(path, cls, preset=preset, **overrides)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_mae.convert",
        description="Convert an official MAE checkpoint (.pth) or a Hugging Face "
        "ViTMAE directory into a Keras model file.",
    )
    parser.add_argument(
        "checkpoint",
        help=".pth / .safetensors file, HF directory, hf://ORG/NAME[@REVISION], or .keras",
    )
    parser.add_argument("--output", required=True, help="model.keras, name.weights.h5 or a dir")
    parser.add_argument(
        "--to",
        choices=("keras", "transformers"),
        default="keras",
        help="transformers: a Hugging Face ViTMAE directory (config.json + model.safetensors)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="architecture; default: config.json or the checkpoint's shapes",
    )
    parser.add_argument(
        "--encoder-only",
        action="store_true",
        help="build the MAEEncoder backbone (for mae_pretrain_vit_*.pth)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=None,
        help="H [W]: another resolution; position tables are resampled",
    )
    parser.add_argument(
        "--norm-pix-loss",
        action="store_true",
        help="set norm_pix_loss (the released pretrain weights used it)",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="encoder heads, for a checkpoint that is no preset",
    )
    parser.add_argument(
        "--decoder-num-heads",
        type=int,
        default=None,
        help="decoder heads, for a checkpoint that is no preset",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = {}
    if args.image_size:
        overrides["image_size"] = tuple((args.image_size * 2)[:2])
    if args.norm_pix_loss:
        if args.encoder_only:
            raise SystemExit("--norm-pix-loss applies to the full model, not --encoder-only")
        overrides["norm_pix_loss"] = True
    if args.num_heads:
        overrides["num_heads"] = args.num_heads
    if args.decoder_num_heads and not args.encoder_only:
        overrides["decoder_num_heads"] = args.decoder_num_heads
    load = load_encoder if args.encoder_only else load_masked_autoencoder
    try:
        model = load_source(args, load, overrides)
    except (ValueError, ImportError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.to == "transformers":
        try:
            export_to_transformers(model, args.output)
        except (ValueError, ImportError, FileExistsError) as e:
            raise SystemExit(f"error: {e}") from None
    elif args.output.endswith(".weights.h5"):
        model.save_weights(args.output)
    else:
        model.save(args.output)
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    print(f"{type(model).__name__}: {params:,} trainable parameters; wrote {args.output}")


def load_source(args, load, overrides):
    """A saved `.keras` model (to export it) or a checkpoint to convert."""
    if not args.checkpoint.endswith(".keras"):
        return load(args.checkpoint, preset=args.preset, **overrides)
    if overrides or args.preset:
        raise ValueError(f"{args.checkpoint!r} is a saved model: drop --preset and the overrides.")
    model = load_model(args.checkpoint)  # checks the file first
    return model.encoder if args.encoder_only and hasattr(model, "encoder") else model


if __name__ == "__main__":
    main()
