"""One backend's side of the cross-backend consistency test (test code).

    KERAS_BACKEND=torch python tests/helpers/cross_backend_worker.py WORKDIR

The model is `new_model()`, the shared tiny one with `norm_pix_loss`; WORKDIR
holds its `reference.weights.h5` and `inputs.npz` (images, noise). One process
does both steps, so that each backend starts once:

1. `compute` builds the model, loads the weights, and writes
   `compute_<backend>.npz`: pred, mask, latent, loss, the encoder's tokens on
   the unmasked images, and every trainable variable's gradient (this
   backend's own autodiff), then saves the model as `model_<backend>.keras`.
   The process then prints `computed` and waits for a line on stdin: the
   driver sends it once every backend has saved its model.
2. `load` loads every `model_*.keras` in WORKDIR (saved by any backend) next to
   the reference model, runs each on the same inputs the same way, and writes
   `load_<backend>.npz` with `<source>/pred`, `<source>/tokens`,
   `<source>/loss`, `<source>/class` and `<source>/max_weight_diff` (against
   the reference weights).
"""

import glob
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mae  # noqa: E402, F401  (registers the classes that load_model reads)
from tests.helpers.backend_grads import outputs_loss_grads  # noqa: E402
from tests.helpers.tiny import tiny_mae  # noqa: E402

COMPUTED = "computed"


def numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def new_model():
    """The tiny MAE with `norm_pix_loss`, so that the loss also compares each
    backend's per-patch mean and variance."""
    return tiny_mae(norm_pix_loss=True)


def reference_model(workdir):
    model = new_model()
    model.load_weights(os.path.join(workdir, "reference.weights.h5"))
    return model


def compute(workdir):
    """Step 1; returns the reference model, for `load`."""
    backend = keras.backend.backend()
    inputs = dict(np.load(os.path.join(workdir, "inputs.npz")))
    model = reference_model(workdir)
    outputs, loss, grads = outputs_loss_grads(model, inputs)
    result = {k: outputs[k] for k in ("pred", "mask", "latent")}
    result["loss"] = np.float32(loss)
    result["tokens"] = numpy(model.encoder(inputs["images"]))
    result.update({f"grad/{path}": g for path, g in grads.items()})
    np.savez(os.path.join(workdir, f"compute_{backend}.npz"), **result)
    model.save(os.path.join(workdir, f"model_{backend}.keras"))
    return model


def load(workdir, model):
    """Step 2, with `model` the reference model that `compute` returned."""
    backend = keras.backend.backend()
    inputs = dict(np.load(os.path.join(workdir, "inputs.npz")))
    sources = {"reference": model}
    for path in sorted(glob.glob(os.path.join(workdir, "model_*.keras"))):
        name = os.path.basename(path)[len("model_") : -len(".keras")]
        sources[name] = keras.saving.load_model(path)
    result = {}
    for name, loaded in sources.items():
        diffs = [
            np.max(np.abs(numpy(a) - numpy(b)), initial=0.0)
            for a, b in zip(loaded.weights, model.weights, strict=True)
        ]
        outputs = loaded(inputs, training=False)
        result[f"{name}/pred"] = numpy(outputs["pred"])
        result[f"{name}/loss"] = numpy(loaded.compute_loss(x=inputs, y_pred=outputs))
        result[f"{name}/tokens"] = numpy(loaded.encoder(inputs["images"]))
        result[f"{name}/max_weight_diff"] = np.float64(max(diffs))
        result[f"{name}/class"] = np.array(type(loaded).__name__)
    np.savez(os.path.join(workdir, f"load_{backend}.npz"), **result)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: cross_backend_worker.py WORKDIR")
    workdir = sys.argv[1]
    model = compute(workdir)
    print(COMPUTED, flush=True)
    if not sys.stdin.readline():
        raise SystemExit("the driver went away before every model was saved")
    load(workdir, model)
