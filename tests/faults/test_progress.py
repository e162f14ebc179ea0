"""The recipes' progress (`keras_mae.recipes.progress`), as a user sees it.

On a terminal `pretrain`'s default `verbose="auto"` draws a bar with the step
count, the rate, the time left and a loss that `fit` logged; elsewhere (a log,
a pipe) it prints one line per epoch with the epoch's loss; Keras' own bar
never runs beside it. A `verbose` that is none of `"auto"`, 0, 1, 2 is refused
before any work, at parsing for the examples' `--verbose`. Under torch DDP
rank 0 alone shows the progress.
"""

import argparse
import io
import math
import re
import sys

import keras
import numpy as np
import pytest

from keras_mae.recipes import arguments
from keras_mae.recipes.pretrain import pretrain
from keras_mae.recipes.progress import EpochLines
from keras_mae.recipes.progress import ProgressBar
from tests.helpers.tiny import SMALLEST
from tests.helpers.tiny import smallest_mae

EPOCHS, STEPS, BATCH = 2, 3, 4
COLOURS = re.compile(r"\x1b\[[0-9;]*m")
MID_EPOCH = re.compile(
    r"^(\d+)/3 \[[=>.]{20}\] ([0-9.e+]+) steps/s - ETA (\d+:\d\d) - loss: ([0-9.e+-]+)$"
)
EPOCH_END = re.compile(r"^3/3 \[={20}\] \d+:\d\d - [0-9.e+]+ steps/s - loss: ([0-9.e+-]+)$")
EPOCH_LINE = re.compile(
    r"^Epoch (\d)/2 - 3 steps - \d+:\d\d - [0-9.e+]+ steps/s - loss: ([0-9.e+-]+)$"
)


def images(count):
    shape = (count, *SMALLEST["image_shape"])
    return np.random.default_rng(0).random(shape, dtype=np.float32)


class Terminal(io.StringIO):
    """What a terminal shows, kept as text."""

    def isatty(self):
        return True


class Losses(keras.callbacks.Callback):
    """The losses `fit` hands its callbacks, after each step and each epoch."""

    def on_train_begin(self, logs=None):
        self.steps, self.epochs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(logs["loss"])


def pretrain_printing(stream, monkeypatch):
    """`pretrain` of the smallest MAE, 2 epochs of 3 steps, with its default `verbose`
    and `stream` as stdout; `(printed text, Losses)`."""
    monkeypatch.setattr(sys, "stdout", stream)
    losses = Losses()
    pretrain(
        smallest_mae(),
        images(STEPS * BATCH),
        epochs=EPOCHS,
        batch_size=BATCH,
        warmup_epochs=1,
        callbacks=[losses],
    )
    monkeypatch.undo()
    return COLOURS.sub("", stream.getvalue()), losses


def shown(values):
    return {f"{value:.4f}" for value in values}


def test_bar_on_a_terminal_shows_steps_rate_time_left_and_a_logged_loss(monkeypatch):
    text, losses = pretrain_printing(Terminal(), monkeypatch)
    assert "━" not in text and "/step" not in text, f"Keras' own bar ran too:\n{text!r}"
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    assert [line for line in lines if line.startswith("Epoch")] == ["Epoch 1/2", "Epoch 2/2"]
    drawn = [MID_EPOCH.match(line) for line in lines]
    drawn = [match for match in drawn if match]
    assert drawn, f"no bar with a step count, rate, time left and loss in:\n{text!r}"
    for match in drawn:
        step, rate, loss = int(match.group(1)), float(match.group(2)), match.group(4)
        assert 1 <= step <= STEPS and rate > 0, match.group(0)
        assert math.isfinite(float(loss)) and loss in shown(losses.steps), (
            f"the bar shows loss {loss}, not one that fit logged: {losses.steps}"
        )
    ends = [EPOCH_END.match(line) for line in lines]
    assert [m.group(1) for m in ends if m] == [f"{loss:.4f}" for loss in losses.epochs], text


def test_without_a_terminal_one_line_per_epoch_holds_its_loss(monkeypatch):
    text, losses = pretrain_printing(io.StringIO(), monkeypatch)
    lines = text.splitlines()
    epoch_lines = [EPOCH_LINE.match(line) for line in lines]
    assert "\r" not in text and all(epoch_lines), f"not one line per epoch:\n{text!r}"
    assert [int(m.group(1)) for m in epoch_lines] == [1, 2], text
    assert [m.group(2) for m in epoch_lines] == [f"{loss:.4f}" for loss in losses.epochs]


def test_a_verbose_of_another_kind_is_refused_before_any_work():
    mae = smallest_mae()
    with pytest.raises(ValueError, match=r"verbose=3 is not one of 'auto', 0, 1, 2: 'auto'"):
        pretrain(mae, images(4), epochs=1, batch_size=4, verbose=3)
    assert not mae.compiled  # refused before any work


@pytest.mark.backend_free
def test_the_examples_verbose_flag(capsys):
    parser = argparse.ArgumentParser()
    arguments.add_run_arguments(parser)
    assert parser.parse_args([]).verbose == "auto"
    assert [parser.parse_args(["--verbose", v]).verbose for v in "0 1 2 auto".split()] == [
        0,
        1,
        2,
        "auto",
    ]
    with pytest.raises(SystemExit):
        parser.parse_args(["--verbose", "bar"])
    assert "verbose='bar' is not one of 'auto', 0, 1, 2" in capsys.readouterr().err


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch_ddp needs torch")
@pytest.mark.parametrize("verbose", ["auto", 1, 2, 0])
def test_ddp_shows_progress_on_rank_0_only(verbose):
    from keras_mae.distribute import torch_ddp

    shown_on = {}
    for rank in (0, 1):
        context = torch_ddp.DDPContext(rank, 2, rank, None)
        callback_list, _ = torch_ddp.rank_callback_list(
            [], context, model=None, verbose=verbose, epochs=1, steps=STEPS
        )
        kinds = [type(c) for c in callback_list.callbacks]
        assert keras.callbacks.ProgbarLogger not in kinds, (rank, kinds)
        shown_on[rank] = [k for k in kinds if k in (ProgressBar, EpochLines)]
    expected = {"auto": [EpochLines], 1: [ProgressBar], 2: [EpochLines], 0: []}[verbose]
    assert shown_on == {0: expected, 1: []}  # "auto": pytest's stdout is no terminal


def test_the_recipes_callbacks_leave_the_training_loop_free(tmp_path):
    """Keras reads each step's logs in the training loop (a wait for the device)
    unless every callback with a per-step hook is `async_safe`: the pre-training
    callbacks and the bar all are, or have none."""
    from keras_mae.recipes.callbacks import pretraining_callbacks
    from keras_mae.recipes.progress import with_progress

    base = keras.callbacks.Callback
    callbacks = with_progress(
        pretraining_callbacks(str(tmp_path), np.zeros((2, 8, 8, 1), "float32")), 1
    )
    assert len(callbacks) >= 5
    for callback in callbacks:
        hooks_default = all(
            getattr(type(callback), hook) is getattr(base, hook)
            for hook in ("on_batch_end", "on_train_batch_end")
        )
        assert getattr(callback, "async_safe", False) or hooks_default, callback
