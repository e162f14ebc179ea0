"""Every `>>>` example in keras_mae's docstrings runs and prints what it shows.

The modules are found by walking the package, so a new example is tested without
being listed here; a module is imported only if its source holds an example. Each
example runs in the PyTorch pass (examples show the API, which every backend's own
tests check; eager torch runs them in seconds, while JAX and TensorFlow compile
each op or step: 54 and 23 s), in a fresh temporary directory (files it writes land
there), with `keras`, `np` and `keras_mae` already imported. Output is
compared with ELLIPSIS and NORMALIZE_WHITESPACE. An example that cannot run cheaply
(a download, a ViT-B, several devices) is a plain code block, not a `>>>` example.
"""

import doctest
import importlib
import importlib.util
import pkgutil

import keras
import numpy as np
import pytest

import keras_mae

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(keras_mae.__path__, "keras_mae."):
        origin = importlib.util.find_spec(info.name).origin
        with open(origin, encoding="utf-8") as source:
            if ">>>" in source.read():
                names.append(info.name)
    return sorted(names)


@pytest.mark.backend_free
def test_the_walk_finds_examples():
    # The walk reaches subpackages: an empty list would let every example rot.
    names = modules_with_examples()
    assert "keras_mae.layers.vit_block" in names
    assert "keras_mae.recipes.schedules" in names


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="runs from the torch pass")
@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    extraglobs = {"keras": keras, "np": np, "keras_mae": keras_mae}
    tests = doctest.DocTestFinder().find(module, name, extraglobs=extraglobs)
    tests = [test for test in tests if test.examples]
    assert tests, f"{name} has '>>>' in its source but no docstring example was found"
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, "".join(report)
