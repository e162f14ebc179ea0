"""Pre-train a Masked Autoencoder, then check what its encoder learned.

    KERAS_BACKEND=jax python examples/pretrain.py

With no arguments this pre-trains the `mae_vit_micro_patch2` preset on
scikit-learn's bundled 8x8 digits (nothing is downloaded; a few minutes on 2 CPU
cores; `tensorflow` and `torch` work the same way), with Keras' progress bar, and
then writes to `--output-dir` (default `mae_output/`):

    mae.keras               the whole pre-trained model
    encoder.keras           the encoder alone, a Keras backbone
                            (keras.models.load_model after `import keras_mae`)
    reconstructions.png     held-out digits: original | masked | reconstruction

and prints the linear-probe accuracy on held-out digits of the pre-trained encoder
next to the same encoder randomly initialised, e.g.

    linear probe on held-out digits (cls token): pre-trained 0.9xx | random init 0.8xx
"""

import argparse
import os
import time

import keras
import numpy as np

import keras_mae
from keras_mae.distribute import runner
from keras_mae.datasets import load_digits
from keras_mae.probe import linear_probe_accuracy
from keras_mae.visualization import save_reconstruction_grid

DATASETS = ("digits",)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mae_vit_micro_patch2", choices=sorted(keras_mae.PRESETS))
    parser.add_argument("--dataset", default="digits", help="one of: " + ", ".join(DATASETS))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help="fraction of patches removed (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, default=2e-3,
                        help="peak learning rate of AdamW after warmup")
    parser.add_argument("--warmup-epochs", type=int, default=5)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--norm-pix-loss", action="store_true",
                        help="regress per-patch normalised pixels (the paper's best)")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="mae_output")
    parser.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")
    parser.add_argument("--distribution", default="none", choices=runner.CHOICES,
                        help="jax: data_parallel | model_parallel; tensorflow: mirrored | "
                        "multi_worker | tpu; torch: ddp (launch with torchrun). "
                        "--batch-size is the global batch")
    args = parser.parse_args(argv)
    if args.dataset not in DATASETS:
        parser.error(f"unknown dataset {args.dataset!r}; available: {', '.join(DATASETS)}")
    if args.epochs < 0:
        parser.error(f"--epochs must be 0 or more, got {args.epochs}")
    return args


def main(argv=None):
    args = parse_args(argv)
    run = runner.start(args.distribution)  # before the model exists
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    (x_train, y_train), (x_test, y_test) = load_digits(seed=args.seed)
    print(f"backend {keras.backend.backend()}: {len(x_train)} training and "
          f"{len(x_test)} held-out {args.dataset} images of shape {x_train.shape[1:]}")

    overrides = {"image_shape": x_train.shape[1:], "norm_pix_loss": args.norm_pix_loss}
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    mae = keras_mae.MaskedAutoencoder.from_preset(args.preset, seed=args.seed, **overrides)
    random_encoder = keras_mae.MAEEncoder.from_config(mae.encoder.get_config())

    steps = max(1, args.epochs * int(np.ceil(len(x_train) / args.batch_size)))
    warmup = min(steps - 1, args.warmup_epochs * int(np.ceil(len(x_train) / args.batch_size)))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps - warmup, warmup_target=args.learning_rate, warmup_steps=warmup
    )
    mae.compile(
        optimizer=keras.optimizers.AdamW(schedule, beta_2=0.95, weight_decay=args.weight_decay)
    )
    start = time.time()
    if args.epochs:
        history = run.fit(
            mae,
            x_train,
            validation_data=(x_test,),
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=args.verbose,
        )
        losses = history.history["loss"]
        print(f"pre-training: {args.epochs} epochs in {time.time() - start:.0f} s, "
              f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"held-out loss {history.history['val_loss'][-1]:.4f}")

    mae.save(os.path.join(args.output_dir, "mae.keras"))
    encoder_path = os.path.join(args.output_dir, "encoder.keras")
    mae.encoder.save(encoder_path)
    png_path = os.path.join(args.output_dir, "reconstructions.png")
    save_reconstruction_grid(mae, x_test[:8], png_path, scale=8)
    print(f"saved {args.output_dir}/mae.keras, {encoder_path} and {png_path}")

    train, test = (x_train, y_train), (x_test, y_test)
    poolings = ("cls", "mean")
    trained = linear_probe_accuracy(mae.encoder, train, test, poolings, args.probe_epochs)
    random = linear_probe_accuracy(random_encoder, train, test, poolings, args.probe_epochs)
    for pooling in poolings:
        print(f"linear probe on held-out {args.dataset} ({pooling} pooling): "
              f"pre-trained {trained[pooling]:.4f} | random init {random[pooling]:.4f}")


if __name__ == "__main__":
    main()
