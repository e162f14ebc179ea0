"""JAX DataParallel and TensorFlow MirroredStrategy resume `pretrain` exactly through `fit`.

These distributions train with Keras' own `fit`, so `pretrain`'s callbacks
(checkpoint, non-finite stop, TensorBoard) run unchanged. This checks the
resume: a run stopped after epoch 1 of 3 (as `TimeLimit` stops one) and
continued by the same call ends with the model and optimizer variables of an
uninterrupted run, bit for bit, on 2 CPU devices
(tests/helpers/distributed_fit_resume_check.py, in a subprocess from the test
run of its own backend). The torch DDP loop has its own, killed, check in
test_ddp_resume.py.
"""

import os
import sys

import keras
import pytest

from tests.distribute.test_distribution import run_check

BACKEND = keras.backend.backend()


def check_env(tmp_path):
    """2 host devices under JAX, and its persistent cache: the three runs compile the same steps."""
    if BACKEND != "jax":
        return None
    return {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "compilation_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


@pytest.mark.serial
@pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow"),
    reason="keras.distribution (JAX) and tf.distribute train through fit; torch has "
    "test_ddp_resume.py",
)
def test_distributed_fit_resumes_bit_identically(tmp_path):
    result = run_check(
        [sys.executable, "tests/helpers/distributed_fit_resume_check.py", str(tmp_path)],
        BACKEND,
        check_env(tmp_path),
    )
    assert result["replicas"] == 2
    steps = 6  # 48 images, global batch 8
    assert len(result["whole_losses"]) == 3 * steps
    assert result["first_losses"] == result["whole_losses"][:steps]
    assert result["resumed_losses"] == result["whole_losses"][steps:]
    assert result["optimizer_arrays"] > 0
    assert result["different"] == [], result
    assert result["max_difference"] == 0.0
    assert os.path.isdir(tmp_path / "stopped" / "checkpoint")
