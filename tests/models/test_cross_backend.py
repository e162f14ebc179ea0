"""TensorFlow, JAX and PyTorch compute the same numbers, and read each other's files.

A backend is fixed at import, so TensorFlow and PyTorch each run
`tests/helpers/cross_backend_worker.py` in a subprocess while this (JAX) process runs
the same worker functions in-process, on the same weights (`.weights.h5`
written here), images and noise. Relative error is max|a - b| / max|b| per
tensor.

1. pred, latent, loss, the encoder's tokens and every gradient agree across
   backends to 1e-5 (float32); the masks are equal.
2. A model saved (`.keras`) under each backend loads under each other one with
   bit-identical weights and outputs identical to the reference model's in
   that backend.

Runs in the JAX pass of tests/run.sh only (it drives all three backends itself).
"""

import os
import queue
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

from tests.helpers import cross_backend_worker
from tests.helpers.backend_grads import rel_err
from tests.helpers.tiny import NUM_PATCHES
from tests.helpers.tiny import TINY

BACKENDS = ("tensorflow", "jax", "torch")
TOLERANCE = 1e-5
TIMEOUT = 300  # seconds a worker may take for a step
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "helpers", "cross_backend_worker.py")

pytestmark = [
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="spawns one subprocess per backend itself; run once, from the JAX pass",
    ),
    pytest.mark.serial,
]


class Worker:
    """The worker script under one backend, in a process of its own: it computes,
    says so, waits for a line on stdin, then loads every backend's model."""

    def __init__(self, backend, workdir):
        self.backend = backend
        self.process = subprocess.Popen(
            [sys.executable, WORKER, str(workdir)],
            cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": backend},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = []
        self.lines = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line.strip())
        self.lines.put(None)  # the process closed its output

    def failure(self, step):
        return f"{self.backend} worker ({step}) failed:\n{''.join(self.output)[-4000:]}"

    def wait_until_computed(self):
        while (line := self.lines.get(timeout=TIMEOUT)) != cross_backend_worker.COMPUTED:
            assert line is not None, self.failure("compute")

    def load(self):
        self.process.stdin.write("load\n")
        self.process.stdin.close()

    def wait_until_loaded(self):
        self.process.wait(timeout=TIMEOUT)
        assert self.process.returncode == 0, self.failure("load")


def results(step, workdir):
    return {b: dict(np.load(workdir / f"{step}_{b}.npz")) for b in BACKENDS}


@pytest.mark.serial
def test_backends_agree_and_read_each_others_files(tmp_path):
    model = cross_backend_worker.new_model()
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:  # norms and biases away from 1 / 0 too
        v.assign(keras.ops.convert_to_numpy(v) + 0.1 * rng.standard_normal(v.shape))
    model.save_weights(str(tmp_path / "reference.weights.h5"))
    np.savez(
        tmp_path / "inputs.npz",
        images=rng.standard_normal((2, *TINY["image_shape"])).astype("float32"),
        noise=rng.random((2, NUM_PATCHES)).astype("float32"),
    )

    # One process per other backend, started while this (JAX) one works.
    workers = [Worker(backend, tmp_path) for backend in BACKENDS if backend != "jax"]
    try:
        reference_model = cross_backend_worker.compute(str(tmp_path))
        for worker in workers:
            worker.wait_until_computed()
        for worker in workers:  # every model_<backend>.keras is written
            worker.load()
        cross_backend_worker.load(str(tmp_path), reference_model)
        for worker in workers:
            worker.wait_until_loaded()
    finally:
        for worker in workers:
            worker.process.kill()

    computed = results("compute", tmp_path)
    reference = computed["jax"]
    grad_keys = [k for k in reference if k.startswith("grad/")]
    assert len(grad_keys) == len(model.trainable_variables)
    for backend in ("tensorflow", "torch"):
        other = computed[backend]
        assert set(other) == set(reference)
        np.testing.assert_array_equal(other["mask"], reference["mask"])
        errors = {k: rel_err(other[k], reference[k]) for k in reference if k != "mask"}
        worst = max(errors, key=errors.get)
        print(
            f"\n{backend} vs jax: worst relative error {errors[worst]:.2e} ({worst}); "
            f"pred {errors['pred']:.2e}, loss {errors['loss']:.2e}, "
            f"tokens {errors['tokens']:.2e}"
        )
        assert errors[worst] <= TOLERANCE, (backend, worst, errors[worst])

    loaded = results("load", tmp_path)
    for backend, result in loaded.items():
        for source in BACKENDS:
            assert str(result[f"{source}/class"]) == "MaskedAutoencoder"
            assert result[f"{source}/max_weight_diff"] == 0.0, (backend, source)
            for key in ("pred", "tokens", "loss"):
                np.testing.assert_array_equal(
                    result[f"{source}/{key}"],
                    result[f"reference/{key}"],
                    err_msg=f"{source}-saved model under {backend}: {key}",
                )
        # ...and across backends, the loaded models agree like the originals.
        assert rel_err(result["reference/pred"], loaded["jax"]["reference/pred"]) <= TOLERANCE
