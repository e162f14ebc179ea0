"""The training-step benchmark: it runs end to end, its CPU schedule interleaves,
and its FLOP count matches a count by hand.

`benchmarks/train_step.py` is what BENCHMARKS.md's numbers come from; this runs
it on the micro preset (seconds, not a timing: nothing here asserts a speed)
with Hugging Face and the torch backend, the two cheapest to start.
"""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BACKEND = keras.backend.backend()
WINDOWS = 2


def import_train_step():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import train_step

    return train_step


def run_benchmark(*extra):
    pytest.importorskip("transformers")
    command = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "train_step.py"),
        "--config",
        "cpu",
        "--preset",
        "mae_vit_micro_patch2",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--windows",
        str(WINDOWS),
        "--repeats",
        "1",
        *extra,
    ]
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["impl"]] = result
    return results, done


def window_intervals(result):
    return [
        (began, began + wall) for began, wall in zip(result["windows_began"], result["windows_s"])
    ]


@pytest.mark.skipif(BACKEND != "torch", reason="one backend is enough")
def test_cpu_benchmark_interleaves_windows_and_reports_ratios():
    # "nope" is no backend: that worker fails, is reported, and the others run on.
    results, done = run_benchmark("--impls", "hf", "torch", "nope")
    assert "FAILED nope: nope benchmark failed with exit code 1" in done.stdout
    assert "Unable to import backend : nope" in done.stderr
    assert sorted(results) == ["hf", "torch"]
    for result in results.values():
        assert len(result["windows_s"]) == WINDOWS
        assert result["images_per_s"] > 0 and result["peak_gib"] > 0
        assert result["batch_size"] == 4
    # Turns alternate: HF window k, then torch window k, then HF window k + 1.
    hf, torch_ = window_intervals(results["hf"]), window_intervals(results["torch"])
    for k in range(WINDOWS):
        assert hf[k][1] <= torch_[k][0]
        if k + 1 < WINDOWS:
            assert torch_[k][1] <= hf[k + 1][0]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| HF ViTMAEForPreTraining") and "| 1.00 |" in rows[1]
    assert rows[2].startswith("| keras_mae (torch)")


class FakeWorker:
    """Stands in for a worker process: logs its turns; "bad" dies in its second."""

    log = []

    def __init__(self, args, impl):
        self.impl, self.turns = impl, 0

    def turn(self):
        self.turns += 1
        FakeWorker.log.append((self.impl, self.turns))
        if self.impl == "bad" and self.turns == 2:
            raise RuntimeError("bad benchmark failed with exit code 1")
        if self.turns <= WINDOWS:  # the build turn, then all but the last window
            return True
        self.result = {"impl": self.impl}
        return False

    def kill(self):
        pass


@pytest.mark.backend_free
@pytest.mark.parametrize("schedule", ["interleaved", "sequential"])
def test_schedules_order_the_turns_and_survive_a_failing_worker(schedule, monkeypatch, capsys):
    train_step = import_train_step()
    monkeypatch.setattr(train_step, "Worker", FakeWorker)
    FakeWorker.log = []
    args = type("Args", (), dict(schedule=schedule, config="cpu", impls=["a", "bad", "b"]))
    results = train_step.run_round(args)
    assert sorted(results) == ["a", "b"]
    assert "FAILED bad: bad benchmark failed" in capsys.readouterr().out
    turns = 1 + WINDOWS
    if schedule == "interleaved":
        expected = [("a", 1), ("bad", 1), ("b", 1), ("a", 2), ("bad", 2), ("b", 2)]
        expected += [(impl, k) for k in range(3, turns + 1) for impl in ("a", "b")]
    else:
        expected = [("a", k) for k in range(1, turns + 1)] + [("bad", 1), ("bad", 2)]
        expected += [("b", k) for k in range(1, turns + 1)]
    assert FakeWorker.log == expected


@pytest.mark.backend_free
def test_benchmark_flop_count_matches_reference_table():
    # Training GFLOP per image at 75% masking, 224 px, counted by hand from the
    # official architectures: 2 FLOPs per multiply-add, matmuls only (attention
    # included), training = 3 x forward, the encoder on 25% of patches + cls.
    train_step = import_train_step()
    expected = {
        "mae_vit_base_patch16": 58.7,
        "mae_vit_large_patch16": 124.5,
        "mae_vit_huge_patch14": 291.4,
    }
    for preset, gflop in expected.items():
        flops = train_step.training_flops_per_image(train_step.preset_architecture(preset))
        assert round(flops / 1e9, 1) == gflop
