import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under JAX, XLA compiles every eager op and every training step of the suite's small
# models (and TensorFlow's steps where a test asks for jit_compile), and for them
# compiling costs more than running: with LLVM's optimisations and XLA:CPU's fusion
# emitters off, a compile takes a third of the time, and even the README's command in a
# subprocess uses less CPU. The compiled ops compute the same IEEE arithmetic, and no
# tolerance changes. Set before any framework starts; subprocesses inherit it (tests that
# add flags of their own append them); an XLA_FLAGS already set is kept as it is.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    # Fresh layer names and seeds for every test. free_memory=False: no full
    # garbage collection per test (0.4-0.6 s each with three frameworks loaded);
    # Python's own collector still frees what earlier tests left behind.
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests marked `serial` share one pytest-xdist group, so that under
    `--dist loadgroup` (tests/run.sh) they run one at a time on one worker: they
    start processes of their own or time their own phases. Runs before xdist
    reads the groups. Tests marked `slow` are skipped unless KERAS_MAE_SLOW=1."""
    slow = pytest.mark.skip(reason="a ViT-B-sized case (a minute or more); set KERAS_MAE_SLOW=1")
    for item in items:
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group("serial"))
        if item.get_closest_marker("slow") is not None and not os.environ.get("KERAS_MAE_SLOW"):
            item.add_marker(slow)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))
