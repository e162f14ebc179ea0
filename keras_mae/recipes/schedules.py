"""Learning-rate rules of the MAE recipes: batch scaling, per-step warmup + half-cosine."""

import math

import keras
from keras import ops


def scaled_learning_rate(base_learning_rate, effective_batch_size):
    """The linear scaling rule of the MAE recipes: `lr = blr * effective_batch / 256`.

    Args:
        base_learning_rate: float, e.g. 1.5e-4 (pre-training), 0.1 (linear
            probe), 5e-4 (fine-tuning ViT-B).
        effective_batch_size: int, batch per step x gradient-accumulation steps
            x devices.
    """
    if effective_batch_size < 1:
        raise ValueError(f"effective_batch_size must be positive. Received: {effective_batch_size}")
    return base_learning_rate * effective_batch_size / 256


@keras.saving.register_keras_serializable(package="keras_mae")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0, then a half-cosine from the peak to `min_learning_rate`.

    The official MAE schedule (`util/lr_sched.py`), evaluated per step:

        lr(s) = peak * s / warmup                                 s < warmup
        lr(s) = min + (peak - min) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2

    With `gradient_accumulation_steps`, Keras passes the micro-batch count, so
    give `warmup_steps` and `total_steps` in micro-batches (epochs x batches
    per epoch), as the official code does.

    Args:
        peak_learning_rate: float, the rate at the end of warmup.
        total_steps: int, steps of the whole run.
        warmup_steps: int, steps of linear warmup. Defaults to 0.
        min_learning_rate: float, the final rate. Defaults to 0.0.

    Example:
    >>> schedule = WarmupCosine(1e-3, total_steps=1000, warmup_steps=100)
    >>> float(schedule(50))  # half-way up
    0.0005...
    """

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0, min_learning_rate=0.0):
        if total_steps < 1:
            raise ValueError(f"total_steps must be positive. Received: total_steps={total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                "warmup_steps must be in [0, total_steps]. Received: "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.peak_learning_rate = peak_learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_learning_rate = min_learning_rate

    def __call__(self, step):
        # Python numbers meet tensors only through operators (`step * 2.0`),
        # never as `ops` arguments, which PyTorch would upload to the device
        # on every step (a blocking copy on a GPU).
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        warm = float(self.warmup_steps)
        warmup_lr = peak * step / max(warm, 1.0)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = (step - warm) / decay_steps
        progress = ops.minimum(ops.relu(progress), ops.ones_like(progress))  # clip to [0, 1]
        cosine = self.min_learning_rate + (peak - self.min_learning_rate) * 0.5 * (
            1.0 + ops.cos(math.pi * progress)
        )
        return ops.where(step < warm, warmup_lr, cosine)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "min_learning_rate": self.min_learning_rate,
        }


def warmup_cosine_for(
    peak_learning_rate, epochs, steps_per_epoch, warmup_epochs, min_learning_rate=0.0
):
    """A `WarmupCosine` given in epochs (warmup clamped to the run)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total, int(round(warmup_epochs * steps_per_epoch)))
    return WarmupCosine(peak_learning_rate, total, warmup, min_learning_rate)
