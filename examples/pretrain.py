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
from keras_mae.data.digits import load_digits
from keras_mae.distribute import runner
from keras_mae.recipes.callbacks import pretraining_callbacks
from keras_mae.recipes.callbacks import restore_checkpoint
from keras_mae.recipes.optimizers import pretraining_optimizer
from keras_mae.recipes.probe import linear_probe_accuracy
from keras_mae.recipes.schedules import warmup_cosine_for
from keras_mae.recipes.visualization import save_reconstruction_grid

DATASETS = ("digits",)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", default="mae_vit_micro_patch2", choices=sorted(keras_mae.PRESETS)
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits | tfds:NAME | folder:PATH (PATH/train/<class>/*.jpg)",
    )
    parser.add_argument("--data-dir", default=None, help="tensorflow-datasets data directory")
    parser.add_argument(
        "--accumulation-steps",
        type=int,
        default=None,
        help="gradient accumulation: effective batch = batch x steps",
    )
    parser.add_argument(
        "--image-every", type=int, default=10, help="write a reconstruction PNG every N epochs"
    )
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--mask-ratio",
        type=float,
        default=None,
        help="fraction of patches removed (default: the preset's)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=2e-3, help="peak learning rate of AdamW after warmup"
    )
    parser.add_argument("--warmup-epochs", type=int, default=5)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument(
        "--norm-pix-loss",
        action="store_true",
        help="regress per-patch normalised pixels (the paper's best)",
    )
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="mae_output")
    parser.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")
    parser.add_argument(
        "--distribution",
        default="none",
        choices=runner.CHOICES,
        help="jax: data_parallel | model_parallel; tensorflow: mirrored | "
        "multi_worker | tpu; torch: ddp (launch with torchrun). "
        "--batch-size is the global batch",
    )
    args = parser.parse_args(argv)
    if args.dataset not in DATASETS and not args.dataset.startswith(("tfds:", "folder:")):
        parser.error(f"unknown dataset {args.dataset!r}; available: {', '.join(DATASETS)}")
    if args.epochs < 0:
        parser.error(f"--epochs must be 0 or more, got {args.epochs}")
    return args


def build_and_restore(args, steps_per_epoch, **overrides):
    """The preset MAE, compiled with the official optimizer and schedule, resumed
    from `<output-dir>/checkpoint` when one exists; returns `(mae, initial_epoch)`."""
    overrides["norm_pix_loss"] = args.norm_pix_loss
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    mae = keras_mae.MaskedAutoencoder.from_preset(args.preset, seed=args.seed, **overrides)
    schedule = warmup_cosine_for(
        args.learning_rate, args.epochs, steps_per_epoch, args.warmup_epochs
    )
    mae.compile(
        optimizer=pretraining_optimizer(
            mae,
            schedule,
            weight_decay=args.weight_decay,
            gradient_accumulation_steps=args.accumulation_steps,
        )
    )
    checkpoint = os.path.join(args.output_dir, "checkpoint")
    initial_epoch = restore_checkpoint(mae, checkpoint)  # 0 unless resuming
    if initial_epoch:
        print(f"resuming from {checkpoint} after epoch {initial_epoch}")
    return mae, initial_epoch


def pretrain_on_source(args, run):
    """`--dataset tfds:NAME` or `folder:PATH`: the tf.data pipeline, resumable."""
    from keras_mae.data import default_mean_std
    from keras_mae.data import eval_dataset
    from keras_mae.data import load_source
    from keras_mae.data import take_images
    from keras_mae.data import train_dataset
    from keras_mae.models.presets import preset_config

    image_shape = tuple(preset_config(args.preset)["image_shape"])
    train = load_source(args.dataset, "train", args.data_dir, channels=image_shape[-1])
    test = load_source(args.dataset, "test", args.data_dir, channels=image_shape[-1])
    print(
        f"backend {keras.backend.backend()}: {len(train)} training and {len(test)} "
        f"held-out images from {args.dataset}, cropped to {image_shape}"
    )
    mae, initial_epoch = build_and_restore(args, len(train) // args.batch_size)
    mean, std = default_mean_std(image_shape[-1])
    held_out = take_images(eval_dataset(test, image_shape[:2], 8, with_labels=False), 8)
    if args.epochs > initial_epoch:
        start = time.time()
        dataset, steps = train_dataset(
            train,
            image_shape[:2],
            args.batch_size,
            epochs=args.epochs,
            initial_epoch=initial_epoch,
            seed=args.seed,
        )
        history = run.fit(
            mae,
            dataset,
            batch_size=None,
            epochs=args.epochs,
            verbose=args.verbose,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=pretraining_callbacks(
                args.output_dir, held_out, mean, std, image_every=args.image_every
            ),
        )
        losses = history.history["loss"]
        print(
            f"pre-training: epochs {initial_epoch + 1}-{args.epochs} in "
            f"{time.time() - start:.0f} s, loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        )
    mae.save(os.path.join(args.output_dir, "mae.keras"))
    encoder_path = os.path.join(args.output_dir, "encoder.keras")
    mae.encoder.save(encoder_path)
    print(
        f"saved {args.output_dir}/mae.keras and {encoder_path}; evaluate with "
        f"examples/linear_probe.py --encoder {encoder_path} --dataset {args.dataset}"
    )


def main(argv=None):
    args = parse_args(argv)
    run = runner.start(args.distribution)  # before the model exists
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.dataset != "digits":
        return pretrain_on_source(args, run)

    (x_train, y_train), (x_test, y_test) = load_digits(seed=args.seed)
    print(
        f"backend {keras.backend.backend()}: {len(x_train)} training and "
        f"{len(x_test)} held-out {args.dataset} images of shape {x_train.shape[1:]}"
    )

    mae, initial_epoch = build_and_restore(
        args, int(np.ceil(len(x_train) / args.batch_size)), image_shape=x_train.shape[1:]
    )
    random_encoder = keras_mae.MAEEncoder.from_config(mae.encoder.get_config())
    start = time.time()
    if args.epochs > initial_epoch:
        history = run.fit(
            mae,
            x_train,
            validation_data=(x_test,),
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=args.verbose,
            initial_epoch=initial_epoch,
            callbacks=pretraining_callbacks(
                args.output_dir, x_test[:8], image_every=args.image_every
            ),
        )
        losses = history.history["loss"]
        print(
            f"pre-training: {args.epochs} epochs in {time.time() - start:.0f} s, "
            f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
            f"held-out loss {history.history['val_loss'][-1]:.4f}"
        )

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
        print(
            f"linear probe on held-out {args.dataset} ({pooling} pooling): "
            f"pre-trained {trained[pooling]:.4f} | random init {random[pooling]:.4f}"
        )


if __name__ == "__main__":
    main()
