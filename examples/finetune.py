"""Fine-tune a pre-trained MAE encoder end to end (the paper's recipe).

    KERAS_BACKEND=jax python examples/finetune.py \
        --encoder mae_output/encoder.keras --dataset folder:PATH

Global average pool of the patch tokens + LayerNorm + linear head; AdamW with
layer-wise learning-rate decay, drop path, RandAugment, mixup / cutmix, label
smoothing and random erasing; warmup + cosine, all in the tf.data pipeline.
Trains on `PATH/train`, evaluates on `PATH/test` (or `PATH/val`) and prints
last:

    test accuracy: 0.xxxx

`--dataset digits` (the default) and `tfds:NAME` work too. `--image-size 48`
fine-tunes at another resolution (the sin-cos position table is rebuilt for
the new patch grid). Every flag left out takes the official ViT-B value.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mae  # noqa: E402
from keras_mae.data import load_source  # noqa: E402
from keras_mae.recipes import arguments  # noqa: E402
from keras_mae.recipes.finetune import finetune  # noqa: E402


def build_parser():
    """The command line; recipe flags left out stay None until `parse_args`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="an encoder.keras file (required)")
    arguments.add_dataset_argument(parser)
    parser.add_argument(
        "--data-dir", default=None, help="tensorflow-datasets data directory (default: tfds')"
    )
    arguments.add_finetune_arguments(parser)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="fine-tune at this resolution (default: the encoder's)",
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=1.0,
        help="evaluation centre crop (default: 1.0; 0.875 for ImageNet-sized images)",
    )
    arguments.add_run_arguments(parser)
    return parser


def parse_args(argv=None):
    """The flags, with every default the user left out filled in."""
    return arguments.resolve(build_parser().parse_args(argv), [("finetune", "")])


def main(argv=None):
    arguments.quiet_output()
    args = parse_args(argv)
    for note in arguments.schedule_notes(args, [("finetune", "")]):
        print(note, flush=True)
    keras.utils.set_random_seed(args.seed)
    encoder = keras_mae.load_model(args.encoder)
    channels = encoder.image_shape[-1]
    train = load_source(args.dataset, "train", args.data_dir, channels=channels)
    test = load_source(args.dataset, "test", args.data_dir, channels=channels)
    image_shape = None
    if args.image_size:
        image_shape = (args.image_size, args.image_size, channels)
    print(
        f"backend {keras.backend.backend()}: {len(train)} training and {len(test)} test "
        f"images, {train.num_classes} classes, encoder {args.encoder}"
    )
    result = finetune(
        encoder,
        train,
        test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_learning_rate=args.base_learning_rate,
        layer_decay=args.layer_decay,
        weight_decay=args.weight_decay,
        drop_path_rate=args.drop_path_rate,
        warmup_epochs=args.warmup_epochs,
        randaugment_magnitude=args.randaugment_magnitude,
        random_erasing=args.random_erasing,
        mixup=args.mixup,
        cutmix=args.cutmix,
        label_smoothing=args.label_smoothing,
        image_shape=image_shape,
        crop_fraction=args.crop_fraction,
        seed=args.seed,
        verbose=args.verbose,
    )
    print(f"test accuracy: {result['accuracy']:.4f}")


if __name__ == "__main__":
    main()
