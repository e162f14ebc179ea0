"""Optimizers of the MAE recipes, written with `keras.ops` only (all three backends).

- `PretrainingAdamW` and `pretraining_optimizer`: Keras' AdamW with
  beta=(0.9, 0.95) and no weight decay on biases and other 1-D parameters (the
  3-D cls and mask tokens are decayed, as in the official code). The rule is
  the class's, so a saved model reloads with it (Keras' `exclude_from_weight_decay`
  is not part of an optimizer's config).
- `LARS`: the linear-probe optimizer of the official code (`util/lars.py`).
- `LayerDecayAdamW` and `layer_decay_optimizer`: AdamW with a learning-rate
  multiplier per variable, for BEiT-style layer-wise learning-rate decay.
  Keras optimizers have no parameter groups; the multipliers are a table keyed
  by variable path (so they survive `get_config`), looked up inside
  `update_step`, which every backend calls once per variable.

All accept Keras' `gradient_accumulation_steps`.
"""

import re

import keras
from keras import ops

from keras_mae.kernels import compat


def is_decayed(variable):
    """Weight decay applies to matrices and tokens, not to biases or norms (1-D)."""
    return len(variable.shape) > 1


def pretraining_optimizer(
    model,
    learning_rate,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.95,
    gradient_accumulation_steps=None,
    **kwargs,
):
    """AdamW as in MAE pre-training: no decay on parameters of rank 1 or less.

    Args:
        model: the model whose `trainable_variables` will be optimised. The
            rule needs only the variables' ranks, so the optimizer works for
            any model; the argument keeps the recipes' call unchanged.
        learning_rate: float or schedule (see `keras_mae.recipes.schedules.WarmupCosine`).
        weight_decay: float. Defaults to 0.05.
        beta_1, beta_2: floats. Default to 0.9 and 0.95.
        gradient_accumulation_steps: int >= 2 or None.
        **kwargs: other `keras.optimizers.AdamW` arguments.

    Returns:
        A `PretrainingAdamW`.
    """
    del model  # the rule is per variable, applied when the optimizer is built
    return PretrainingAdamW(
        learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        gradient_accumulation_steps=gradient_accumulation_steps,
        **kwargs,
    )


# Keras' AdamW as this backend runs it: under PyTorch Keras swaps
# `keras.optimizers.AdamW` for a fused (torch._foreach) class when it is constructed,
# which a subclass of `keras.optimizers.AdamW` would not get. `__new__` alone
# picks that class without creating any variable.
_BackendAdamW = type(keras.optimizers.AdamW.__new__(keras.optimizers.AdamW))


@keras.saving.register_keras_serializable(package="keras_mae")
class PretrainingAdamW(_BackendAdamW):
    """Keras' AdamW without weight decay on parameters of rank <= 1 (biases, norms).

    The parameter groups of the official pre-training (`main_pretrain.py`,
    `optim_factory.add_weight_decay`): every variable of rank > 1 is decayed
    (kernels, the cls and mask tokens), the others are not. The rule is
    applied in `build` from the variables' ranks, so it needs no list of
    variables in the config: a model saved with this optimizer and reloaded
    with `keras.models.load_model` trains on exactly as before. (Keras'
    `exclude_from_weight_decay` keeps variable ids, which no config can hold,
    and `build` replaces any such earlier call with this rule.)

    Args:
        learning_rate: float or schedule. Defaults to 0.001.
        weight_decay: float. Defaults to 0.05.
        beta_1, beta_2: floats. Default to 0.9 and 0.95 (MAE pre-training).
        **kwargs: other `keras.optimizers.AdamW` arguments (`epsilon`,
            `gradient_accumulation_steps`, `clipnorm`, ...).

    Example:
    >>> mae = keras_mae.MaskedAutoencoder.from_preset("mae_vit_micro_patch2")
    >>> optimizer = PretrainingAdamW(1.5e-4, weight_decay=0.05)
    >>> mae.compile(optimizer=optimizer)
    """

    def __init__(
        self,
        learning_rate=0.001,
        weight_decay=0.05,
        beta_1=0.9,
        beta_2=0.95,
        name="pretraining_adamw",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            beta_1=beta_1,
            beta_2=beta_2,
            name=name,
            **kwargs,
        )

    def build(self, variables):
        if not self.built:
            self.exclude_from_weight_decay(var_list=[v for v in variables if not is_decayed(v)])
        super().build(variables)


@keras.saving.register_keras_serializable(package="keras_mae")
class LARS(keras.optimizers.Optimizer):
    """LARS, the rule of the official MAE linear probe (SGD + momentum + trust ratio).

    For each parameter of rank > 1: `d = g + weight_decay * p`, scaled by the
    trust ratio `trust_coefficient * ||p|| / ||d||` (1 where either norm is 0).
    Parameters of rank <= 1 (biases, norms) take the plain gradient, no decay,
    no scaling. Then `mu = momentum * mu + d` and `p -= lr * mu`.
    See https://arxiv.org/abs/1708.03888.

    Args:
        learning_rate: float or schedule. Defaults to 0.1.
        momentum: float. Defaults to 0.9.
        weight_decay: float, L2 added to the gradient of rank > 1 parameters.
            Defaults to 0.0 (the linear probe's value).
        trust_coefficient: float. Defaults to 0.001.
        **kwargs: base optimizer arguments (`gradient_accumulation_steps`,
            `clipnorm`, ...); Keras' own decoupled `weight_decay` is not used.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> optimizer = LARS(learning_rate=0.1)
    >>> model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        name="lars",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1). Received: momentum={momentum}")
        if weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                "weight_decay must be >= 0 and trust_coefficient > 0. Received: "
                f"weight_decay={weight_decay}, trust_coefficient={trust_coefficient}"
            )
        self.momentum = momentum
        self.lars_weight_decay = weight_decay
        self.trust_coefficient = trust_coefficient

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if len(variable.shape) > 1:
            gradient = gradient + self.lars_weight_decay * variable
            param_norm = ops.sqrt(ops.sum(ops.square(variable)))
            update_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            trust = ops.where(
                (param_norm > 0) & (update_norm > 0),
                self.trust_coefficient * param_norm / ops.maximum(update_norm, 1e-30),
                ops.ones_like(param_norm),
            )
            gradient = gradient * trust
        momentum = self.momentums[compat.variable_index(self, variable)]
        self.assign(momentum, self.momentum * momentum + gradient)
        self.assign_sub(variable, lr * momentum)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "trust_coefficient": self.trust_coefficient,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mae")
class LayerDecayAdamW(keras.optimizers.Optimizer):
    """AdamW with a learning-rate multiplier and a decay switch per variable.

    The update is torch's AdamW (decoupled decay `p *= 1 - lr * wd`, then Adam
    with bias correction and `eps` outside the square root), with
    `lr = learning_rate * multiplier[variable.path]`; variables whose path is
    in `no_decay_paths` are not decayed. Use `layer_decay_optimizer` to fill
    the tables for a ViT.

    Args:
        learning_rate: float or schedule.
        weight_decay: float. Defaults to 0.05.
        beta_1, beta_2: floats. Default to 0.9 and 0.999 (fine-tuning).
        epsilon: float. Defaults to 1e-8 (torch's).
        learning_rate_multipliers: dict `{variable.path: float}`; missing
            paths get 1.0.
        no_decay_paths: list of variable paths without weight decay.
        **kwargs: base optimizer arguments (e.g. `gradient_accumulation_steps`).
    """

    def __init__(
        self,
        learning_rate=1e-3,
        weight_decay=0.05,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        learning_rate_multipliers=None,
        no_decay_paths=None,
        name="layer_decay_adamw",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.adamw_weight_decay = weight_decay
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.learning_rate_multipliers = dict(learning_rate_multipliers or {})
        self.no_decay_paths = list(no_decay_paths or [])

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.first_moments = self.add_optimizer_variables(variables, "m")
        self.second_moments = self.add_optimizer_variables(variables, "v")
        tabled = set(self.learning_rate_multipliers) | set(self.no_decay_paths)
        if tabled and not tabled & {v.path for v in variables}:
            raise ValueError(
                f"none of the {len(variables)} variables to optimise has a path in this "
                "optimizer's tables (e.g. the variable "
                f"{variables[0].path!r}, the table's {sorted(tabled)[0]!r}): it was made "
                "for another model. Make it with layer_decay_optimizer(model, ...) for "
                "the model it trains."
            )
        no_decay = set(self.no_decay_paths)
        self.variable_rules = [
            (float(self.learning_rate_multipliers.get(v.path, 1.0)), v.path not in no_decay)
            for v in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        index = compat.variable_index(self, variable)
        multiplier, decayed = self.variable_rules[index]
        lr = ops.cast(learning_rate, variable.dtype) * multiplier
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        if decayed and self.adamw_weight_decay:
            self.assign(variable, variable * (1.0 - lr * self.adamw_weight_decay))
        m = self.first_moments[index]
        v = self.second_moments[index]
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * gradient)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * ops.square(gradient))
        m_hat = m / (1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = v / (1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        self.assign_sub(variable, lr * m_hat / (ops.sqrt(v_hat) + self.epsilon))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "weight_decay": self.adamw_weight_decay,
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "learning_rate_multipliers": self.learning_rate_multipliers,
                "no_decay_paths": self.no_decay_paths,
            }
        )
        return config


def vit_layer_id(path, num_layers):
    """BEiT's layer id of a variable of a ViT: 0 for the patch embedding and cls
    token, i + 1 for block i, `num_layers + 1` for everything after (final
    norm, head)."""
    match = re.search(r"block_(\d+)/", path)
    if match:
        return int(match.group(1)) + 1
    if "patch_encoder" in path or "class_token" in path:
        return 0
    return num_layers + 1


def layer_decay_multipliers(variables, num_layers, layer_decay):
    """`{path: layer_decay ** (num_layers + 1 - layer_id)}` for ViT variables."""
    return {
        v.path: layer_decay ** (num_layers + 1 - vit_layer_id(v.path, num_layers))
        for v in variables
    }


def layer_decay_optimizer(
    model,
    num_layers,
    learning_rate,
    layer_decay=0.65,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.999,
    **kwargs,
):
    """The fine-tuning optimizer: AdamW with layer-wise learning-rate decay.

    As the official `param_groups_lrd`: block i gets `layer_decay ** (L - i)`,
    the patch embedding and cls token `layer_decay ** (L + 1)`, the final norm
    and head 1; biases, norms (rank <= 1) and the cls token are not decayed.

    Args:
        model: the model whose `trainable_variables` will be optimised (built).
        num_layers: int, the ViT's blocks.
        learning_rate: float or schedule.
        layer_decay: float. Defaults to 0.65 (official ViT-B; 0.75 for ViT-L/H).
        weight_decay: float. Defaults to 0.05.
        beta_1, beta_2: floats. Default to 0.9 and 0.999.
        **kwargs: other `LayerDecayAdamW` arguments.
    """
    variables = model.trainable_variables
    paths = [v.path for v in variables]
    if len(set(paths)) != len(paths):
        raise ValueError(
            "layer-wise decay keys variables by path, and this model has duplicate "
            "variable paths; give its layers unique names."
        )
    no_decay = [v.path for v in variables if not is_decayed(v) or "class_token" in v.path]
    return LayerDecayAdamW(
        learning_rate,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        learning_rate_multipliers=layer_decay_multipliers(variables, num_layers, layer_decay),
        no_decay_paths=no_decay,
        **kwargs,
    )
