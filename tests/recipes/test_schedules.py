import math

import numpy as np
import pytest

from keras_mae.recipes.schedules import WarmupCosine
from keras_mae.recipes.schedules import scaled_learning_rate
from keras_mae.recipes.schedules import warmup_cosine_for


def official_lr(epoch, peak, warmup_epochs, epochs, min_lr=0.0):
    """util/lr_sched.adjust_learning_rate of the official code, epoch is fractional."""
    if epoch < warmup_epochs:
        return peak * epoch / warmup_epochs
    return min_lr + (peak - min_lr) * 0.5 * (
        1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs))
    )


@pytest.mark.backend_free
def test_scaling_rule():
    assert scaled_learning_rate(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_learning_rate(0.1, 256) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="effective_batch_size"):
        scaled_learning_rate(1e-3, 0)


def test_warmup_cosine_matches_official_per_step():
    steps_per_epoch, epochs, warmup = 7, 10, 2
    schedule = warmup_cosine_for(1e-3, epochs, steps_per_epoch, warmup, min_learning_rate=1e-5)
    for step in range(0, epochs * steps_per_epoch + 1):
        expected = official_lr(step / steps_per_epoch, 1e-3, warmup, epochs, 1e-5)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)


def test_warmup_cosine_endpoints_and_config():
    schedule = WarmupCosine(2.0, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(1.0)
    assert float(schedule(10)) == pytest.approx(2.0)
    assert float(schedule(55)) == pytest.approx(1.0, abs=1e-6)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)
    assert float(schedule(150)) == pytest.approx(0.0, abs=1e-6)  # stays at the minimum
    clone = WarmupCosine.from_config(schedule.get_config())
    np.testing.assert_allclose(float(clone(37)), float(schedule(37)))


def test_no_warmup_and_validation():
    schedule = WarmupCosine(1.0, total_steps=4, warmup_steps=0)
    assert float(schedule(0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(1.0, total_steps=4, warmup_steps=5)
