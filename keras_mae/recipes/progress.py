"""Progress of `fit` that never makes the training loop wait for the device.

Keras' own bar (`fit(verbose=1)`, `keras.callbacks.ProgbarLogger`) reads
every step's loss as the step ends: the host waits for the device to finish
that step before it queues the next one, and on an accelerator the device
idles between steps. Keras' `CallbackList` itself turns a step's logs into
Python numbers before it calls any callback's `on_train_batch_end`; it does
that on a worker thread, leaving the training loop free, when every callback
with such a hook says it is `async_safe` (JAX and PyTorch; TensorFlow always
reads in the loop).

`ProgressBar` is such a callback: it counts steps on the host (the step
count, the rate and the time left need no device value) and shows the last
loss that has already reached the host, a copy (`kernels.host_copy`) taken at
most once per redraw and shown once `ready()` says it has arrived, never
waited for. At the epoch's end, where Keras reads the epoch's logs anyway,
it prints the epoch's final line with them. `EpochLines` prints that line
alone, once per epoch, and has no per-step hook at all.

Every recipe's `verbose` (and the examples' `--verbose`) means:

| `verbose` | prints |
|---|---|
| `"auto"` | the bar on a terminal (a TTY); one line per epoch elsewhere (logs, CI, pipes) |
| `1` | the bar, also when stdout is not a terminal |
| `2` | one line per epoch |
| `0` | nothing |

`with_progress(callbacks, verbose)` adds the one `verbose` asks for to a
callback list; give that list to `fit` with `verbose=0`, so that Keras' own
bar does not run too:

>>> import io
>>> import keras, numpy as np
>>> class Terminal(io.StringIO):
...     def isatty(self):
...         return True
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> terminal, log = Terminal(), io.StringIO()
>>> history = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, epochs=1,
...                     verbose=0, callbacks=with_progress([], "auto", stream=terminal))
>>> "2/2 [====================]" in terminal.getvalue()
True
>>> history = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, epochs=1,
...                     verbose=0, callbacks=with_progress([], "auto", stream=log))
>>> log.getvalue().startswith("Epoch 1/1 - 2 steps - ")
True
"""

import math
import sys
import threading
import time

import keras
import numpy as np

from keras_mae import kernels
from keras_mae.recipes.defaults import verbosity

BAR_WIDTH = 20


def is_terminal(stream):
    """Whether `stream` is an interactive terminal (where a bar can redraw in place)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def format_duration(seconds):
    """`"0:07"`, `"12:34"` or `"1:02:03"` (hours only when there are any)."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


def format_rate(steps_per_second):
    """`"4.21 steps/s"`, three significant digits (whole numbers from 100 on)."""
    if steps_per_second >= 100:
        return f"{steps_per_second:.0f} steps/s"
    return f"{steps_per_second:.3g} steps/s"


def format_value(value):
    """A logged number as Keras prints it: 4 decimals, or 4 significant digits when tiny."""
    return f"{value:.4f}" if abs(value) > 1e-3 or value == 0 else f"{value:.4e}"


def scalar(value):
    """A logged value as a float (read from the device if it is still there), or None
    when it is not a single number."""
    try:
        array = np.asarray(kernels.host_copy(value).value())
    except (TypeError, ValueError):
        return None
    if array.size != 1 or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array.reshape(()))


class EpochLines(keras.callbacks.Callback):
    """One line per epoch: `Epoch 2/5 - 89 steps - 0:21 - 4.24 steps/s - loss: 0.1180`.

    The line comes at the epoch's end, with every logged number (`loss`,
    `val_loss`, metrics); the rate is the epoch's steps over its training time
    (validation left out). Without a per-step hook it adds nothing to a step.
    Under `keras_mae.distribute.torch_ddp` it runs on rank 0 only
    (`main_process_only`).

    Args:
        stream: a text stream, or None (the default) for `sys.stdout` at the
            time of each write.
    """

    main_process_only = True

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream
        self.trained = None  # when the epoch's validation began

    def write(self, text):
        stream = sys.stdout if self.stream is None else self.stream
        stream.write(text)
        stream.flush()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.monotonic()
        self.trained = None

    def on_test_begin(self, logs=None):
        if self.trained is None:
            self.trained = time.monotonic()

    def epoch_text(self, epoch):
        return f"Epoch {epoch + 1}/{self.params.get('epochs')}"

    def logged(self, logs):
        """` - loss: 0.1180 - val_loss: 0.1203`: every single number of `logs`."""
        numbers = {name: scalar(value) for name, value in (logs or {}).items()}
        return "".join(
            f" - {name}: {format_value(value)}"
            for name, value in numbers.items()
            if value is not None
        )

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        seconds = (self.trained or now) - self.start
        steps = self.params.get("steps")
        parts = [self.epoch_text(epoch)]
        if steps:
            parts.append(f"{steps} steps")
        parts.append(format_duration(now - self.start))
        if steps and seconds > 0:
            parts.append(format_rate(steps / seconds))
        self.write(" - ".join(parts) + self.logged(logs) + "\n")


class ProgressBar(EpochLines):
    """Each epoch's step count, rate (steps/s), time left and last arrived loss.

    `Epoch 2/5` on its own line, then the bar, redrawn in place at most every
    `interval` seconds:
    ` 12/89 [==>.................] 4.21 steps/s - ETA 0:16 - loss: 0.1234`,
    and at the epoch's end its final state with the elapsed time and every
    logged number (`loss`, `val_loss`, metrics). The rate leaves out each
    epoch's first step (compilation, the input pipeline's start).

    Mid-epoch the loss shown is the last one that has reached the host (see
    the module docstring): nothing here waits for the device before the
    epoch's end, and Keras may call the per-step hook on a worker thread
    (`async_safe`). Under `keras_mae.distribute.torch_ddp` it runs on rank 0
    only (`main_process_only`).

    Args:
        stream: a text stream, or None (the default) for `sys.stdout` at the
            time of each write. Drawn in place (a carriage return) also when
            it is not a terminal; `progress_callback("auto")` chooses.
        interval: float, seconds between redraws. Defaults to 0.1.
    """

    async_safe = True

    def __init__(self, stream=None, interval=0.1):
        super().__init__(stream)
        self.interval = interval
        self.lock = threading.Lock()  # batch hooks may run on several worker threads

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        with self.lock:
            self.steps = self.params.get("steps")
            self.done = 0
            self.after_first_step = None
            self.last_draw = -math.inf
            self.width = 0  # of the last drawn bar, to blank what a shorter one leaves
            self.pending = None  # (step, a loss on its way to the host)
            self.loss = self.loss_step = None  # the latest loss that has arrived, its step
            self.write(self.epoch_text(epoch) + "\n")

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        with self.lock:
            self.done = max(self.done, batch + 1)  # worker threads may finish out of order
            if self.after_first_step is None:
                self.after_first_step = now
            if now - self.last_draw < self.interval:
                return
            self.receive(batch + 1, (logs or {}).get("loss"))
            self.last_draw = now
            self.draw(self.counter() + self.progress(now) + self.loss_text())

    def receive(self, step, loss):
        """Keep the loss copy that has arrived; start the next one (never waits)."""
        self.arrived()
        if self.pending is None and loss is not None:
            self.pending = (step, kernels.host_copy(loss))
            self.arrived()  # at once when it is a host value (Keras hands hooks numbers)

    def arrived(self):
        """Take the pending loss if it has reached the host and is newer than the shown one."""
        if self.pending is None or not self.pending[1].ready():
            return
        (step, copy), self.pending = self.pending, None
        if self.loss_step is None or step > self.loss_step:
            self.loss, self.loss_step = scalar(copy.value()), step

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        with self.lock:
            self.pending = None
            if self.steps is None:  # a stream of unknown length: this epoch's count
                self.steps = self.done
            elapsed = f" {format_duration(now - self.start)}"
            rate = self.rate(self.trained or now)
            elapsed += f" - {format_rate(rate)}" if rate else ""
            self.draw(self.counter() + elapsed + self.logged(logs), end="\n")

    def counter(self):
        """` 12/89 [=====>..............]`, or `12 steps` when the length is unknown."""
        if not self.steps:
            return f"{self.done} steps"
        digits = len(str(self.steps))
        filled = min(BAR_WIDTH, BAR_WIDTH * self.done // self.steps)
        arrow = ">" if filled < BAR_WIDTH else ""
        bar = (("=" * filled + arrow).ljust(BAR_WIDTH, "."))[:BAR_WIDTH]
        return f"{self.done:>{digits}}/{self.steps} [{bar}]"

    def rate(self, now):
        """Steps per second, after the epoch's first step when there is more than one."""
        if self.done > 1 and now > self.after_first_step:
            return (self.done - 1) / (now - self.after_first_step)
        if self.done and now > self.start:
            return self.done / (now - self.start)
        return None

    def progress(self, now):
        """` 4.21 steps/s - ETA 0:16` (the time left only when the length is known)."""
        rate = self.rate(now)
        if rate is None:
            return ""
        text = f" {format_rate(rate)}"
        if self.steps:
            text += f" - ETA {format_duration((self.steps - self.done) / rate)}"
        return text

    def loss_text(self):
        return "" if self.loss is None else f" - loss: {format_value(self.loss)}"

    def draw(self, text, end=""):
        """Redraw the bar's line in place (a carriage return, blanks over a longer line)."""
        padding = " " * max(self.width - len(text), 0)
        self.width = len(text)
        self.write(f"\r{text}{padding}{end}")


def progress_callback(verbose="auto", stream=None):
    """The callback `verbose` asks for: `ProgressBar`, `EpochLines` or None (0).

    Args:
        verbose: `"auto"` (the bar when `stream` is a terminal, else one line
            per epoch), 1 (the bar), 2 (one line per epoch) or 0 (None).
        stream: where it writes; None for `sys.stdout` (asked now whether it
            is a terminal).
    """
    verbose = verbosity(verbose)
    if verbose == "auto":
        verbose = 1 if is_terminal(sys.stdout if stream is None else stream) else 2
    if verbose == 1:
        return ProgressBar(stream)
    if verbose == 2:
        return EpochLines(stream)
    return None


def with_progress(callbacks, verbose, stream=None):
    """`callbacks` (a new list) with `progress_callback(verbose, stream)` added, unless
    it is None or the list holds an `EpochLines` already; give it to `fit` with
    `verbose=0`.

    Args:
        callbacks: a list of Keras callbacks, or None.
        verbose: `"auto"`, 0, 1 or 2 (see the module docstring).
        stream: where it writes; None for `sys.stdout`.
    """
    callbacks = list(callbacks or [])
    callback = progress_callback(verbose, stream)
    if callback is None or any(isinstance(c, EpochLines) for c in callbacks):
        return callbacks
    return callbacks + [callback]
