"""A killed pre-training run, re-run with the same command, ends where an
uninterrupted one does: same weights, optimizer state, iteration count and
learning rate."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    '''
    import os
    import sys

    import keras
    import numpy as np

    from keras_mae.recipes.callbacks import EpochCheckpoint, StopOnNonFiniteLoss, restore_checkpoint
    from keras_mae.data import ArraySource, train_dataset
    from keras_mae.recipes.optimizers import pretraining_optimizer
    from keras_mae.recipes.schedules import warmup_cosine_for
    from tests.helpers.tiny import SMALLEST, smallest_mae

    EPOCHS, BATCH = 3, 8


    class Crash(keras.callbacks.Callback):
        """Dies like a killed process (no clean-up) in the middle of an epoch."""

        def __init__(self, epoch):
            super().__init__()
            self.crash_epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.current == self.crash_epoch and batch == 1:
                os._exit(3)

        def on_epoch_begin(self, epoch, logs=None):
            self.current = epoch


    def run(directory, crash_epoch=None):
        keras.utils.set_random_seed(0)
        shape = SMALLEST["image_shape"]
        images = np.random.default_rng(0).random((32, *shape)).astype("float32")
        mae = smallest_mae()
        source = ArraySource(images)
        steps = len(source) // BATCH
        mae.compile(optimizer=pretraining_optimizer(
            mae, warmup_cosine_for(1e-2, EPOCHS, steps, warmup_epochs=1)))
        initial_epoch = restore_checkpoint(mae, os.path.join(directory, "checkpoint"))
        dataset, steps = train_dataset(source, shape[:2], BATCH, epochs=EPOCHS,
                                       initial_epoch=initial_epoch, seed=0)
        callbacks = [StopOnNonFiniteLoss(), EpochCheckpoint(os.path.join(directory, "checkpoint"))]
        if crash_epoch is not None:
            callbacks.append(Crash(crash_epoch))
        history = mae.fit(dataset, epochs=EPOCHS, initial_epoch=initial_epoch,
                          steps_per_epoch=steps, callbacks=callbacks, verbose=0)
        optimizer = mae.optimizer
        result = {
            "initial_epoch": np.array(initial_epoch),
            "epochs_run": np.array(len(history.history["loss"])),
            "iterations": np.array(int(keras.ops.convert_to_numpy(optimizer.iterations))),
            "learning_rate": np.array(float(keras.ops.convert_to_numpy(optimizer.learning_rate))),
        }
        for i, v in enumerate(mae.variables + optimizer.variables):
            result[f"v{i}"] = np.asarray(keras.ops.convert_to_numpy(v))
        np.savez(os.path.join(directory, "result.npz"), **result)
        return result


    if __name__ == "__main__":
        crash = int(sys.argv[2]) if len(sys.argv) > 2 else None
        run(sys.argv[1], crash)
    '''
)


def load_script(tmp_path):
    path = tmp_path / "resumable_pretrain.py"
    path.write_text(SCRIPT)
    return path


def script_namespace(path):
    namespace = {"__name__": "resumable_pretrain"}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The script in this process, never interrupted."""
    tmp_path = tmp_path_factory.mktemp("reference")
    return script_namespace(load_script(tmp_path))["run"](str(tmp_path / "run"))


def run_script(path, directory, crash_epoch=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=keras.backend.backend())
    if keras.backend.backend() == "jax":
        # The crashed run and the resumed one compile the same step: once, through the cache.
        env["JAX_COMPILATION_CACHE_DIR"] = str(path.parent / "compilation_cache")
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, str(path), str(directory)]
    if crash_epoch is not None:
        command.append(str(crash_epoch))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.serial
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="spawns processes; runs once, from the JAX pass of tests/run.sh (the in-process "
    "test below covers every backend)",
)
def test_killed_run_resumes_from_last_completed_epoch(tmp_path, reference):
    script = load_script(tmp_path)
    directory = tmp_path / "run"
    crashed = run_script(script, directory, crash_epoch=1)
    assert crashed.returncode == 3, crashed.stderr[-3000:]
    from keras_mae.recipes.callbacks import checkpoint_epoch

    assert checkpoint_epoch(str(directory / "checkpoint")) == 1  # epoch 0 completed
    resumed = run_script(script, directory)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = dict(np.load(directory / "result.npz"))
    assert int(after["initial_epoch"]) == 1
    assert int(after["epochs_run"]) == 2
    assert int(after["iterations"]) == int(reference["iterations"]) == 12
    np.testing.assert_allclose(after["learning_rate"], reference["learning_rate"], atol=1e-9)
    names = sorted(k for k in reference if k.startswith("v"))
    assert names == sorted(k for k in after if k.startswith("v"))
    for name in names:
        np.testing.assert_allclose(after[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_restore_continues_exactly_in_process(tmp_path, reference):
    namespace = script_namespace(load_script(tmp_path))

    class StopAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    run = namespace["run"]
    # An interrupted run: epochs 0 and 1 complete and are checkpointed, then it dies.
    original_fit = keras.Model.fit

    def fit_then_stop(self, *args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks", [])) + [StopAfterEpoch()]
        return original_fit(self, *args, **kwargs)

    keras.Model.fit = fit_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            run(str(tmp_path / "resumed"))
    finally:
        keras.Model.fit = original_fit
    keras.utils.clear_session(free_memory=False)
    resumed = run(str(tmp_path / "resumed"))
    assert int(resumed["initial_epoch"]) == 2
    assert int(resumed["iterations"]) == int(reference["iterations"])
    for name in (k for k in reference if k.startswith("v")):
        np.testing.assert_allclose(
            resumed[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_non_finite_loss_stops_with_clear_message():
    from keras_mae.recipes.callbacks import NonFiniteLossError
    from keras_mae.recipes.callbacks import StopOnNonFiniteLoss

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    x = np.full((8, 2), 1e10, "float32")
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        model.fit(x, x[:, :1], epochs=3, batch_size=4, verbose=0, callbacks=[StopOnNonFiniteLoss()])


def test_pretraining_callbacks_write_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorboard")
    from keras_mae.recipes.callbacks import pretraining_callbacks

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 2), "float32")
    callbacks = pretraining_callbacks(str(tmp_path))
    assert any(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks)
    model.fit(x, x[:, :1], epochs=2, batch_size=4, verbose=0, callbacks=callbacks)
    events = os.listdir(tmp_path / "logs" / "train")
    assert any(name.startswith("events.out.tfevents") for name in events)
    assert sorted(os.listdir(tmp_path / "checkpoint"))  # the epoch checkpoint too
