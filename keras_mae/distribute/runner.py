"""One switch for `examples/pretrain.py --distribution`: pick the backend's machinery.

`start(kind)` sets the distribution up globally, before the model is built,
so a script needs no other change than calling `run.fit(mae, ...)` instead of
`mae.fit(...)`:

| kind | backend | what runs |
|---|---|---|
| `none` | any | plain `fit` |
| `data_parallel` | jax | `keras.distribution.DataParallel` over all devices |
| `model_parallel` | jax | `keras.distribution.ModelParallel`, block kernels sharded |
| `mirrored` | tensorflow | `tf.distribute.MirroredStrategy` |
| `multi_worker` | tensorflow | `MultiWorkerMirroredStrategy` (`TF_CONFIG` per worker) |
| `tpu` | tensorflow | `TPUStrategy` |
| `ddp` | torch | `DistributedDataParallel` loop, launched by `torchrun` |

Under JAX, a multi-host job (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
`JAX_PROCESS_ID` set, or a TPU pod / SLURM) is joined first through
`jax.distributed.initialize`.
"""

import os
import sys

import keras
import numpy as np

from keras_mae.kernels import compat
from keras_mae.recipes.progress import with_progress

CHOICES = ("none", "data_parallel", "model_parallel", "mirrored", "multi_worker", "tpu", "ddp")
BACKEND_OF = {
    "data_parallel": "jax",
    "model_parallel": "jax",
    "mirrored": "tensorflow",
    "multi_worker": "tensorflow",
    "tpu": "tensorflow",
    "ddp": "torch",
}


class DistributedRun:
    """What `start` set up; `fit` trains, `is_main` says who writes files."""

    def __init__(self, kind, context=None):
        self.kind = kind
        self.context = context

    @property
    def is_main(self):
        if self.kind == "ddp":
            return self.context.is_main
        if keras.backend.backend() == "jax":
            import jax

            return jax.process_index() == 0
        if self.kind == "multi_worker":
            import tensorflow as tf

            resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
            return resolver.task_type in (None, "chief") or (
                resolver.task_type == "worker" and resolver.task_id == 0
            )
        return True

    def fit(
        self,
        model,
        x,
        batch_size,
        epochs,
        verbose="auto",
        validation_data=None,
        initial_epoch=0,
        callbacks=None,
        steps_per_epoch=None,
        seed=0,
        **kwargs,
    ):
        """`model.fit`, or the DDP loop under `ddp` (same History result).

        Args:
            model, x, batch_size, epochs, validation_data, initial_epoch,
                callbacks, steps_per_epoch: as `model.fit`'s (`batch_size` is
                the global batch).
            verbose: `"auto"`, 0, 1 or 2, as the recipes take it
                (`keras_mae.recipes.progress`: `"auto"` a progress bar on a
                terminal, one line per epoch otherwise), shown by the main
                process only (`is_main`); Keras' own bar stays off.
            seed: int, the DDP loop's data order (epoch e's permutation
                depends only on `(seed, e)`); `model.fit` shuffles on its own.
            **kwargs: further `model.fit` arguments (not under `ddp`).

        Under `ddp` every rank trains on its share of each global batch and
        runs the callbacks (`keras_mae.distribute.torch_ddp.fit`); afterwards
        the other ranks leave the process group and exit, so only rank 0 goes
        on to evaluate and write files.
        """
        if self.kind != "none" and not self.is_main:
            verbose = 0  # one process shows the progress of all
        callbacks = with_progress(callbacks, verbose)
        verbose = 0  # the progress is among the callbacks
        if self.kind == "ddp":
            return self._fit_ddp(
                model,
                x,
                batch_size,
                epochs,
                verbose,
                validation_data,
                initial_epoch,
                callbacks,
                steps_per_epoch,
                seed,
                kwargs,
            )
        if self.kind != "none" and batch_size and hasattr(x, "shape"):
            # Every batch must split evenly over the replicas: drop a last
            # partial batch, as distributed input pipelines do.
            x = full_batches(x, batch_size)
            if validation_data is not None:
                validation_data = tuple(full_batches(v, batch_size) for v in validation_data)
        history = model.fit(
            x,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            validation_data=validation_data,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            steps_per_epoch=steps_per_epoch,
            **kwargs,
        )
        if keras.backend.backend() == "jax" and self.kind != "none":
            gather_to_one_device(model)
        return history

    def _fit_ddp(
        self,
        model,
        x,
        batch_size,
        epochs,
        verbose,
        validation_data,
        initial_epoch,
        callbacks,
        steps_per_epoch,
        seed,
        kwargs,
    ):
        from keras_mae.distribute import torch_ddp

        if not hasattr(x, "shape") or not batch_size:
            raise ValueError(
                "--distribution ddp trains on in-memory arrays with a global batch "
                f"size; received {type(x).__name__} with batch_size={batch_size}."
            )
        if kwargs:
            raise ValueError(
                f"the DDP loop does not take {sorted(kwargs)}; it takes the arguments "
                "of DistributedRun.fit only."
            )
        history = torch_ddp.fit(
            model,
            model.optimizer,
            np.asarray(x),
            batch_size,
            epochs=epochs,
            context=self.context,
            shuffle_seed=seed,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            validation_data=validation_data,
            steps_per_epoch=steps_per_epoch,
        )
        torch_ddp.destroy_process_group()
        if not self.context.is_main:
            sys.exit(0)
        return history


def gather_to_one_device(model):
    """Leave the JAX distribution: the model's weights back on one device.

    After distributed training, inference on arbitrary batch sizes (a last
    batch of 103 does not split over 2 devices) and saving run as without a
    distribution. The optimizer state stays where it is (training is over).
    """
    values = [np.asarray(v.value) for v in model.variables]
    keras.distribution.set_distribution(None)
    for variable, value in zip(model.variables, values):
        compat.forget_layout(variable)  # else Keras re-shards the value by its layout
        variable.assign(value)
    model.train_function = model.test_function = model.predict_function = None


def full_batches(array, batch_size):
    """`array` without its last partial batch (unchanged if smaller than a batch)."""
    keep = len(array) - len(array) % batch_size
    return array[:keep] if keep else array


def start(kind, model_parallelism=2):
    """Set up distribution `kind` (one of `CHOICES`) for the current backend.

    Call it before building the model. Returns a `DistributedRun`.
    """
    if kind not in CHOICES:
        raise ValueError(f"unknown distribution {kind!r}; choose one of {', '.join(CHOICES)}")
    backend = keras.backend.backend()
    if kind != "none" and BACKEND_OF[kind] != backend:
        raise ValueError(
            f"--distribution {kind} runs on the {BACKEND_OF[kind]} backend; this is "
            f"{backend}. Set KERAS_BACKEND={BACKEND_OF[kind]} (torch: launch with torchrun)."
        )
    if kind == "none":
        return DistributedRun(kind)
    if backend == "jax":
        from keras_mae.distribute import jax_distribution

        if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("JAX_NUM_PROCESSES"):
            jax_distribution.initialize_multi_host()
        keras.distribution.set_distribution(
            jax_distribution.make_distribution(kind, model_parallelism)
        )
        return DistributedRun(kind)
    if backend == "tensorflow":
        import tensorflow as tf

        from keras_mae.distribute import tf_distribution

        tf.distribute.experimental_set_strategy(tf_distribution.make_strategy(kind))
        return DistributedRun(kind)
    from keras_mae.distribute import torch_ddp

    return DistributedRun(kind, torch_ddp.init_process_group())
