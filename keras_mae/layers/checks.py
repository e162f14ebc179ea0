"""Checks of constructor arguments, shared by the layers and models.

Each names the argument as the caller spelled it, the value received, what was
expected and what to do, and raises before any weight exists. Python ints only
where a count is meant (`16.0` heads is refused rather than truncated).
"""

import math


def is_int(value):
    """A Python or numpy integer, not a bool."""
    return not isinstance(value, bool) and hasattr(value, "__index__")


def check_positive_int(name, value, minimum=1):
    """`value` as an int >= `minimum`, or a ValueError naming `name`."""
    if not is_int(value) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum}. Received: {name}={value!r}"
            + (f"; use {int(value)}" if whole(value) and value >= minimum else "")
        )
    return int(value)


def whole(value):
    """A float such as 16.0 that stands for an integer."""
    return is_number(value) and not is_int(value) and float(value) == int(value)


def is_number(value):
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_positive_number(name, value):
    """`value` as a finite float > 0, or a ValueError naming `name`."""
    if not is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0. Received: {name}={value!r}")
    return value


def check_heads(width_name, width, heads_name, heads):
    """Attention heads that split the width evenly: `width % heads == 0`."""
    check_positive_int(width_name, width)
    check_positive_int(heads_name, heads)
    if width % heads:
        divisors = [d for d in range(1, width + 1) if width % d == 0]
        nearest = min(divisors, key=lambda d: (abs(d - heads), d))
        raise ValueError(
            f"{heads_name}={heads} does not divide {width_name}={width}: each head takes "
            f"{width_name} / {heads_name} channels. Use a {heads_name} that divides "
            f"{width} (e.g. {nearest}), or a {width_name} that is a multiple of {heads}."
        )


def check_mlp_ratio(name, value, width_name, width):
    """An MLP ratio that leaves at least one hidden unit: `int(width * ratio) >= 1`."""
    check_positive_number(name, value)
    if int(width * value) < 1:
        raise ValueError(
            f"{name}={value} gives int({width_name} * {name}) = int({width} * {value}) = 0 "
            f"MLP units. Use {name} >= {1 / width:.3g} (the usual value is 4.0)."
        )


def check_bool(name, value):
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{name} must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_seed(name, value):
    if value is not None and not is_int(value):
        raise ValueError(f"{name} must be an integer or None. Received: {name}={value!r}")


def check_transformer(hidden_dim, num_layers, num_heads, mlp_ratio, layer_norm_epsilon, prefix=""):
    """The arguments of a stack of ViT blocks on a sin-cos position table.

    `prefix` is prepended to the width, depth and head names in messages (e.g.
    `"decoder_"` for a `MaskedAutoencoder`'s decoder arguments).
    """
    width = f"{prefix}hidden_dim"
    check_positive_int(width, hidden_dim)
    if hidden_dim % 4:
        raise ValueError(
            f"{width} must be a positive multiple of 4 for the sin-cos position table. "
            f"Received: {width}={hidden_dim}; use e.g. {max(4, 4 * round(hidden_dim / 4))}."
        )
    check_heads(width, hidden_dim, f"{prefix}num_heads", num_heads)
    check_positive_int(f"{prefix}num_layers", num_layers)
    check_mlp_ratio("mlp_ratio", mlp_ratio, width, hidden_dim)
    check_positive_number("layer_norm_epsilon", layer_norm_epsilon)


class ChecksInputsFirst:
    """Mixin for a Keras layer or model whose `check_inputs(*args, **kwargs)` runs
    in `__call__`, before Keras' call wrapper.

    Keras re-raises an error raised inside `call` under the first line
    "Exception encountered when calling ...", and logs and notebooks often
    show only that line. An error raised here keeps its own message first:
    what was wrong, what was expected, what to do. Put it before
    `keras.layers.Layer` (or `keras.Model`) among the bases.
    """

    def check_inputs(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define check_inputs")

    def __call__(self, *args, **kwargs):
        self.check_inputs(*args, **kwargs)
        return super().__call__(*args, **kwargs)
