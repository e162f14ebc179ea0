"""The host's global random generators, as arrays a checkpoint can hold.

Keras layers draw their randomness from `keras.random.SeedGenerator` states,
which are model variables (so in every checkpoint). What still draws from a
process-wide generator is saved here beside them: Python's `random`, NumPy's
global generator and, under the torch backend, torch's CPU generator (Keras'
`Dropout` without a seed samples from it). Restoring them after the last
completed epoch makes a resumed run draw what an uninterrupted one draws.
"""

import json
import random

import keras
import numpy as np


def host_rng_state():
    """The global generators' states as `{name: numpy array}` (npz-ready, no pickles)."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": np.asarray(internal, np.int64),
        "python_meta": np.asarray(json.dumps([version, gauss])),
        "numpy": np.asarray(keys, np.uint32),
        "numpy_meta": np.asarray(json.dumps([kind, int(position), int(has_gauss), cached])),
    }
    if keras.backend.backend() == "torch":
        import torch

        state["torch"] = torch.get_rng_state().numpy().copy()
    return state


def set_host_rng_state(state):
    """Restore what `host_rng_state` returned (names it lacks are left as they are)."""
    if "python" in state:
        version, gauss = json.loads(str(state["python_meta"]))
        random.setstate((version, tuple(int(v) for v in state["python"]), gauss))
    if "numpy" in state:
        kind, position, has_gauss, cached = json.loads(str(state["numpy_meta"]))
        np.random.set_state(
            (kind, np.asarray(state["numpy"], np.uint32), position, has_gauss, cached)
        )
    if "torch" in state and keras.backend.backend() == "torch":
        import torch

        torch.set_rng_state(torch.from_numpy(np.asarray(state["torch"], np.uint8).copy()))
