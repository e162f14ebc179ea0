"""Linear probe of a pre-trained MAE encoder (the paper's protocol).

    KERAS_BACKEND=jax python examples/linear_probe.py \
        --encoder mae_output/encoder.keras --dataset folder:PATH

Trains BatchNorm (no affine) + a linear head on the frozen encoder's cls token
with LARS and warmup + cosine on `PATH/train`, evaluates on `PATH/test` (or
`PATH/val`), and prints last:

    test accuracy: 0.xxxx

`--dataset digits` (the default) and `tfds:NAME` work too. `--no-cache` runs
the encoder on augmented crops every step (the official setting; slow on CPU);
by default the features are computed once.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_mae  # noqa: E402,F401  (registers the encoder classes)
from keras_mae.data import load_source  # noqa: E402
from keras_mae.recipes.linear_probe import linear_probe  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", required=True, help="an encoder.keras file")
    parser.add_argument("--dataset", default="digits", help="digits | tfds:NAME | folder:PATH")
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument("--epochs", type=int, default=90)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--base-learning-rate",
        type=float,
        default=0.1,
        help="lr = blr x batch / 256 (official 0.1 at batch 16384)",
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        default=1.0,
        help="evaluation centre crop (0.875 for ImageNet-sized images)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="augment and run the encoder every step"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    encoder = keras.models.load_model(args.encoder)
    train = load_source(args.dataset, "train", args.data_dir, channels=encoder.image_shape[-1])
    test = load_source(args.dataset, "test", args.data_dir, channels=encoder.image_shape[-1])
    print(
        f"backend {keras.backend.backend()}: {len(train)} training and {len(test)} test "
        f"images, {train.num_classes} classes, encoder {args.encoder}"
    )
    result = linear_probe(
        encoder,
        train,
        test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        base_learning_rate=args.base_learning_rate,
        warmup_epochs=args.warmup_epochs,
        cache_features=not args.no_cache,
        crop_fraction=args.crop_fraction,
        seed=args.seed,
        verbose=args.verbose,
    )
    print(f"train accuracy: {result['train_accuracy']:.4f}")
    print(f"test accuracy: {result['accuracy']:.4f}")


if __name__ == "__main__":
    main()
