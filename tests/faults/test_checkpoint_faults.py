"""Checkpoint writes that fail (a full disk) or are killed half-way: the error
names the path and the cause, no temporary file remains, the last good
checkpoint still loads, and a re-run resumes from it. Re-runs with other
settings are refused before any work."""

import errno
import json
import os
import shutil

import keras
import numpy as np
import pytest

from keras_mae.recipes import callbacks as checkpoints
from keras_mae.recipes.callbacks import CheckpointWriteError
from keras_mae.recipes.callbacks import checkpoint_epoch
from keras_mae.recipes.callbacks import restore_checkpoint
from keras_mae.recipes.callbacks import save_checkpoint
from keras_mae.recipes.pretrain import pretrain
from tests.helpers.tiny import smallest_mae

tiny_mae = smallest_mae
# The re-run tests copy one first run (a module-scoped fixture).
pytestmark = pytest.mark.xdist_group("test_checkpoint_faults")


def images(count=32):
    return np.random.default_rng(0).random((count, 8, 8, 1)).astype("float32")


def compiled(mae):
    mae.compile(optimizer=keras.optimizers.AdamW(1e-3))
    mae.optimizer.build(mae.trainable_variables)
    return mae


def values(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.variables]


def full_disk_after_half(monkeypatch):
    """`np.savez` that writes half of what it would, then fails as a full disk does."""
    real_savez = np.savez

    def savez(file, **arrays):
        import io

        buffer = io.BytesIO()
        real_savez(buffer, **arrays)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", savez)


def test_a_write_that_fails_half_way_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    directory = str(tmp_path / "checkpoint")
    mae = compiled(tiny_mae())
    save_checkpoint(mae, directory, 3)
    good = values(mae)
    mae.variables[0].assign(np.zeros(mae.variables[0].shape))  # what epoch 4 changed
    with monkeypatch.context() as patch:
        full_disk_after_half(patch)
        with pytest.raises(CheckpointWriteError) as raised:
            save_checkpoint(mae, directory, 4)
    message = str(raised.value)
    path = os.path.join(directory, "variables.npz")
    assert f"could not write the checkpoint to {path!r} (No space left on device)" in message
    assert "free space" in message and "--output-dir" in message
    assert "the last good checkpoint (epoch 3) is intact" in message
    assert isinstance(raised.value, OSError)
    assert raised.value.__cause__.errno == errno.ENOSPC
    assert sorted(os.listdir(directory)) == ["state.json", "variables.npz"]  # no temporary
    restored = compiled(tiny_mae())
    assert restore_checkpoint(restored, directory) == 3
    for got, want in zip(values(restored), good):
        np.testing.assert_array_equal(got, want)


def test_a_failed_first_write_says_there_is_no_earlier_checkpoint(tmp_path, monkeypatch):
    directory = str(tmp_path / "checkpoint")
    full_disk_after_half(monkeypatch)
    with pytest.raises(CheckpointWriteError, match="there is no earlier checkpoint"):
        save_checkpoint(compiled(tiny_mae()), directory, 1)
    assert os.listdir(directory) == []
    assert checkpoint_epoch(directory) == 0


def test_leftovers_of_a_killed_write_never_break_a_rerun(tmp_path):
    directory = tmp_path / "checkpoint"
    mae = compiled(tiny_mae())
    save_checkpoint(mae, str(directory), 2)
    # What a write killed half-way leaves: today's temporary name and the earlier
    # release's, holding the first half of an npz.
    half = (directory / "variables.npz").read_bytes()[:100]
    (directory / ".variables.npz.abc123.tmp").write_bytes(half)
    (directory / "variables.npz.tmp.npz").write_bytes(half)
    (directory / "notes.txt").write_text("kept")
    restored = compiled(tiny_mae())
    assert restore_checkpoint(restored, str(directory)) == 2
    assert sorted(os.listdir(directory)) == ["notes.txt", "state.json", "variables.npz"]


def test_epoch_and_variables_are_one_file(tmp_path):
    """A kill between the npz and the readable state.json cannot pair epoch 2's
    state with epoch 3's variables: the npz carries its own state."""
    directory = tmp_path / "checkpoint"
    mae = compiled(tiny_mae())
    save_checkpoint(mae, str(directory), 2)
    stale = (directory / "state.json").read_text()
    mae.variables[0].assign(np.ones(mae.variables[0].shape))
    save_checkpoint(mae, str(directory), 3)
    (directory / "state.json").write_text(stale)  # as if killed before its rename
    assert json.loads(stale)["epoch"] == 2
    assert checkpoint_epoch(str(directory)) == 3
    restored = compiled(tiny_mae())
    assert restore_checkpoint(restored, str(directory)) == 3
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored.variables[0]), 1.0)


def test_a_failed_model_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "mae.keras")
    mae = tiny_mae()
    mae(images(2))
    checkpoints.save_model_atomically(mae, path)
    before = open(path, "rb").read()

    def failing_save(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(keras.Model, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match=r"could not write the model to .*mae\.keras"):
        checkpoints.save_model_atomically(mae, path, "the checkpoint is intact.")
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["mae.keras"]


def run(directory, **overrides):
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    settings = dict(epochs=2, batch_size=8, base_learning_rate=0.32, warmup_epochs=1)
    settings.update(overrides)
    model = settings.pop("model", None) or tiny_mae()
    return pretrain(model, images(), output_dir=str(directory), verbose=0, **settings)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The output directory of one `run()` (2 epochs at batch 8); tests copy it."""
    directory = tmp_path_factory.mktemp("first_run")
    run(directory)
    return directory


def copy_run(first_run, directory):
    shutil.copytree(first_run, directory, dirs_exist_ok=True)


def test_a_rerun_with_other_settings_is_refused_before_any_work(tmp_path, first_run):
    copy_run(first_run, tmp_path)
    saved = (tmp_path / "mae.keras").read_bytes()
    checkpoint = (tmp_path / "checkpoint" / "variables.npz").read_bytes()
    with pytest.raises(ValueError) as raised:
        run(tmp_path, batch_size=16, epochs=3, model=tiny_mae(mask_ratio=0.5))
    message = str(raised.value)
    assert "was written with other settings" in message
    assert "batch_size: checkpoint 8, now 16" in message
    assert "epochs: checkpoint 2, now 3" in message
    assert "mask_ratio: checkpoint 0.75, now 0.5" in message
    assert "weight_decay" not in message  # unchanged settings are not listed
    assert "another --output-dir" in message and "--continue-with-new-settings" in message
    # Nothing was rewritten.
    assert (tmp_path / "mae.keras").read_bytes() == saved
    assert (tmp_path / "checkpoint" / "variables.npz").read_bytes() == checkpoint
    for other in [dict(seed=3), dict(weight_decay=0.1), dict(accumulation_steps=2)]:
        with pytest.raises(ValueError, match=f"{next(iter(other))}: checkpoint"):
            run(tmp_path, **other)
    with pytest.raises(ValueError, match=r"data\.sha1: checkpoint"):
        pretrain(tiny_mae(), images() * 0.5, epochs=2, batch_size=8, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="model.hidden_dim: checkpoint 8, now 16"):
        run(tmp_path, model=tiny_mae(hidden_dim=16))


def test_continue_with_new_settings_says_what_changes(tmp_path, capsys, first_run):
    copy_run(first_run, tmp_path)
    summary = run(tmp_path, epochs=4, batch_size=16, allow_new_settings=True)
    printed = capsys.readouterr().out
    assert "continuing the checkpoint" in printed
    assert (
        "batch_size: checkpoint 8, now 16" in printed and "epochs: checkpoint 2, now 4" in printed
    )
    assert "optimizer step count: 8 -> 4" in printed
    assert (summary["initial_epoch"], summary["epochs"], summary["steps_per_epoch"]) == (2, 4, 2)
    # The next re-run compares with the new settings.
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["settings"]["batch_size"] == 16 and state["epoch"] == 4
    run(tmp_path, epochs=4, batch_size=16)


def record_backend(directory, backend):
    """Make the checkpoint of `directory` say that `backend` wrote it (None: an earlier
    release's, which records no backend)."""
    path = directory / "checkpoint" / "variables.npz"
    with np.load(path) as saved:
        arrays = dict(saved)
    state = json.loads(str(arrays[checkpoints.STATE_KEY]))
    state["settings"].pop("backend")
    if backend is not None:
        state["settings"]["backend"] = backend
    arrays[checkpoints.STATE_KEY] = np.asarray(json.dumps(state))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_a_checkpoint_of_another_backend_is_refused_unless_allowed(tmp_path, capsys, first_run):
    copy_run(first_run, tmp_path)
    now = keras.backend.backend()
    other = "tensorflow" if now != "tensorflow" else "jax"
    state = checkpoints.read_checkpoint_state(str(tmp_path / "checkpoint"))
    assert state["settings"]["backend"] == now
    record_backend(tmp_path, other)
    checkpoint = (tmp_path / "checkpoint" / "variables.npz").read_bytes()
    with pytest.raises(ValueError) as raised:
        run(tmp_path)  # the settings it records, under another backend
    message = str(raised.value)
    line = (
        f"backend: checkpoint written under {other}, this run under {now} (each backend "
        "draws the masks and drop paths its own way: going on would equal neither "
        f"backend's uninterrupted run; KERAS_BACKEND={other} resumes it as it was)"
    )
    assert f"(epoch 2) was written with other settings than this run's:\n  {line}\n" in message
    assert "--continue-with-new-settings (pretrain(..., allow_new_settings=True))" in message
    assert (tmp_path / "checkpoint" / "variables.npz").read_bytes() == checkpoint
    summary = run(tmp_path, epochs=3, allow_new_settings=True)
    printed = capsys.readouterr().out
    assert "continuing the checkpoint" in printed and line in printed
    assert (summary["initial_epoch"], summary["epochs"]) == (2, 3)
    state = checkpoints.read_checkpoint_state(str(tmp_path / "checkpoint"))
    assert (state["epoch"], state["settings"]["backend"]) == (3, now)


def test_a_checkpoint_that_records_no_backend_resumes_as_before(tmp_path, capsys, first_run):
    """Checkpoints of earlier releases record no backend: they go on under any."""
    copy_run(first_run, tmp_path)
    record_backend(tmp_path, None)
    summary = run(tmp_path)
    assert (summary["initial_epoch"], summary["epochs"]) == (2, 2)
    assert "continuing" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="seed: checkpoint 0, now 3") as raised:
        run(tmp_path, seed=3)  # other changes are still refused
    assert "backend" not in str(raised.value)
