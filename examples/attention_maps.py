"""Draw where an MAE encoder's cls token looks, over a few images.

    KERAS_BACKEND=jax python examples/attention_maps.py --encoder mae_output/encoder.keras

writes `attention_maps.png`: one row per held-out digit (taken in turn from
each class), the image, then the image with the cls token's attention laid
over it in red (attention rollout through all blocks, Abnar & Zuidema 2020,
or `--method cls` for one block's heads' mean, `--layer`). `--encoder` takes
the `encoder.keras` (or `mae.keras`) that `examples/pretrain.py` writes;
without it the `--preset` architecture is drawn at random initialisation,
a baseline to compare against. Seconds on a CPU. It prints the file written
and each image's largest patch share of the cls token's attention, e.g.

    attention_maps.png: 8 images, rollout over 4 blocks of mae_output/encoder.keras
    largest patch share per image: 0.081 0.074 ...
"""

import argparse

import keras
import numpy as np

import keras_mae
from keras_mae.data.arrays import load_arrays
from keras_mae.models import attention_maps
from keras_mae.recipes import visualization


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--encoder",
        default=None,
        help="a .keras file of a MAEEncoder or a MaskedAutoencoder (default: the "
        "--preset architecture at random initialisation)",
    )
    parser.add_argument(
        "--preset",
        default="mae_vit_micro_patch2",
        choices=sorted(keras_mae.PRESETS),
        help="architecture when no --encoder is given (default: %(default)s)",
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits | folder:PATH (PATH/test/<class>/*), images drawn from the "
        "held-out split (default: %(default)s)",
    )
    parser.add_argument(
        "--count", type=int, default=8, help="images, one per row (default: %(default)s)"
    )
    parser.add_argument(
        "--method",
        default="rollout",
        choices=("rollout", "cls"),
        help="rollout: attention rollout through every block; cls: the cls token's "
        "attention in block --layer, heads averaged (default: %(default)s)",
    )
    parser.add_argument(
        "--layer", type=int, default=-1, help="the block for --method cls (default: %(default)s)"
    )
    parser.add_argument(
        "--scale", type=int, default=8, help="pixel upscaling in the picture (default: %(default)s)"
    )
    parser.add_argument(
        "--output", default="attention_maps.png", help="PNG to write (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count must be at least 1. Received: {args.count}")
    return args


def load_encoder(args):
    if args.encoder is None:
        return keras_mae.MAEEncoder.from_preset(args.preset)
    model = keras_mae.load_model(args.encoder)
    if isinstance(model, keras_mae.MaskedAutoencoder):
        return model.encoder
    if not isinstance(model, keras_mae.MAEEncoder):
        raise ValueError(
            f"--encoder must hold a MAEEncoder or a MaskedAutoencoder; {args.encoder} "
            f"holds a {type(model).__name__}."
        )
    return model


def as_unit_floats(images):
    images = np.asarray(images)
    return images.astype("float32") / 255.0 if images.dtype == np.uint8 else images


def overlay(images, maps, patch_size):
    """Images `(N, H, W, C)` in [0, 1] with per-patch maps `(N, gh, gw)` in red."""
    heat = np.repeat(np.repeat(maps, patch_size, 1), patch_size, 2)  # (N, H, W)
    heat = heat / np.maximum(heat.max(axis=(1, 2), keepdims=True), 1e-12)
    grey = images.mean(-1) if images.shape[-1] != 1 else images[..., 0]
    rgb = np.repeat(grey[..., None], 3, -1) * 0.6
    rgb[..., 0] += 0.4 * heat
    return np.clip(rgb, 0.0, 1.0)


def main(argv=None):
    args = parse_args(argv)
    encoder = load_encoder(args)
    _, (images, labels), _ = load_arrays(args.dataset, channels=encoder.image_shape[-1])
    images = as_unit_floats(images[visualization.spread_over_classes(labels, args.count)])
    if args.method == "rollout":
        maps = attention_maps.rollout_map(encoder, images)  # (N, gh, gw)
        what = f"rollout over {len(encoder.blocks)} blocks"
    else:
        maps = keras.ops.mean(attention_maps.cls_attention(encoder, images, args.layer), axis=1)
        what = f"cls attention of block {args.layer % len(encoder.blocks)}"
    maps = np.asarray(keras.ops.convert_to_numpy(maps), "float64")
    originals = (
        images if images.shape[-1] == 3 else np.repeat(images.mean(-1, keepdims=True), 3, -1)
    )
    grid = visualization.image_grid(
        [originals, overlay(images, maps, encoder.patch_size)], scale=args.scale
    )
    visualization.write_png(args.output, grid)
    source = args.encoder or f"{args.preset} (random init)"
    print(f"{args.output}: {len(images)} images, {what} of {source}")
    print("largest patch share per image:", " ".join(f"{m.max():.3f}" for m in maps))
    return maps


if __name__ == "__main__":
    main()
