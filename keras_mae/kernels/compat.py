"""The private Keras that modules outside `kernels/` need, behind named functions.

Keras has no public way to do these. Each function names the Keras behaviour
it relies on, so that a Keras release that changes it breaks here, in one
place; `tests/test_architecture.py` keeps private Keras attributes out of the
rest of the package.
"""


def variable_index(optimizer, variable):
    """The position of `variable` among the variables `optimizer` was built with.

    It indexes the lists that `optimizer.add_optimizer_variables` returned in
    `build` (one slot variable per trainable variable), as Keras' own
    optimizers do in their `update_step`.

    Args:
        optimizer: a built `keras.optimizers.Optimizer`.
        variable: one of the variables passed to its `build`.

    Returns:
        int.
    """
    # Keras' `BaseOptimizer._get_variable_index`: the lookup its own optimizers'
    # `update_step` use, keyed by `_var_key(variable)`.
    return optimizer._get_variable_index(variable)


def forget_layout(variable):
    """Drop the distribution layout of a JAX variable, so that `assign` keeps a
    value where it is (after `keras.distribution.set_distribution(None)`).

    Args:
        variable: a `keras.Variable` made under a `keras.distribution`.
    """
    # Keras' JAX `Variable._layout`: set from the distribution when the variable
    # is made, and `_direct_assign` shards every assigned value by it, even once
    # the distribution is gone.
    variable._layout = None
