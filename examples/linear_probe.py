"""Linear probe of a pre-trained MAE encoder (the paper's protocol).

    KERAS_BACKEND=jax python examples/linear_probe.py \
        --encoder mae_output/encoder.keras --dataset folder:PATH

Trains BatchNorm (no affine) + a linear head on the frozen encoder's cls token
(and, by default, on the mean of its patch tokens, from the same pass) with
LARS and warmup + cosine on `PATH/train`, evaluates on `PATH/test` (or
`PATH/val`), and prints one line per pooling and base learning rate, e.g.

    test accuracy (cls pooling, blr 6.4, chosen on held-out training images: 0.1 0.21,
    0.4 0.25, 1.6 0.31, 6.4 0.33): 0.3650 (train 0.4380)

(2,000 CIFAR-10 training images, 200 test images, `mae_vit_tiny_patch4` after
one pre-training epoch; `--base-learning-rate 0.1` gives 0.2150.) Without
`--base-learning-rate` the rate is the best of 0.1 (official), 0.4, 1.6 and
6.4 on a held-out tenth of the training split (cheap: the features are
cached); give one or several to skip the choice.

`--dataset digits` (the default) and `tfds:NAME` work too; images pass the
tf.data pipeline (RandomResizedCrop 0.08-1 + flip for training, resize +
centre crop for evaluation, ImageNet's mean/std for RGB, 0.5 for grey).
`--no-cache` runs the encoder on augmented crops every step (the official
setting; slow on CPU); by default the features are computed once. Every flag
left out takes the official value, or for `--dataset digits` the value its
help names.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mae  # noqa: E402
from keras_mae.data import load_source  # noqa: E402
from keras_mae.recipes import arguments  # noqa: E402
from keras_mae.recipes.linear_probe import linear_probe  # noqa: E402


def build_parser():
    """The command line; recipe flags left out stay None until `parse_args`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="an encoder.keras file (required)")
    arguments.add_dataset_argument(parser)
    parser.add_argument(
        "--data-dir", default=None, help="tensorflow-datasets data directory (default: tfds')"
    )
    arguments.add_linear_probe_arguments(parser)
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=1.0,
        help="evaluation centre crop (default: 1.0; 0.875 for ImageNet-sized images)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="augment and run the encoder every step (default: features computed once)",
    )
    arguments.add_run_arguments(parser)
    return parser


def parse_args(argv=None):
    """The flags, with every default the user left out filled in."""
    return arguments.resolve(build_parser().parse_args(argv), [("linear_probe", "")])


def main(argv=None):
    arguments.quiet_output()
    args = parse_args(argv)
    for note in arguments.schedule_notes(args, [("linear_probe", "")]):
        print(note, flush=True)
    keras.utils.set_random_seed(args.seed)
    encoder = keras_mae.load_model(args.encoder)
    train = load_source(args.dataset, "train", args.data_dir, channels=encoder.image_shape[-1])
    test = load_source(args.dataset, "test", args.data_dir, channels=encoder.image_shape[-1])
    print(
        f"backend {keras.backend.backend()}: {len(train)} training and {len(test)} test "
        f"images, {train.num_classes} classes, encoder {args.encoder}"
    )
    results = linear_probe(
        encoder,
        train,
        test,
        pooling=args.pooling,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_learning_rate=args.base_learning_rate,
        warmup_epochs=args.warmup_epochs,
        cache_features=not args.no_cache,
        crop_fraction=args.crop_fraction,
        seed=args.seed,
        verbose=args.verbose,
    )
    for result in results:
        print(
            f"test accuracy ({result['pooling']} pooling, blr {arguments.rate_text(result)}): "
            f"{result['accuracy']:.4f} (train {result['train_accuracy']:.4f})"
        )


if __name__ == "__main__":
    main()
