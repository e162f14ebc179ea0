"""A quick linear probe: how linearly separable are an encoder's features?"""

import keras
import numpy as np

from keras_mae.layers.token_pooling import TokenPooling


def pool(tokens, pooling):
    """`TokenPooling` in numpy: `(N, 1 + L, dim)` -> `(N, dim)`."""
    TokenPooling(pooling)  # validates the name
    return tokens[:, 0] if pooling == "cls" else tokens[:, 1:].mean(axis=1)


def linear_probe_accuracy(
    encoder,
    train,
    test,
    pooling="cls",
    epochs=100,
    batch_size=256,
    learning_rate=1e-2,
    seed=0,
):
    """Fit a linear classifier on frozen, pooled features; return test accuracy.

    As in MAE's linear probe, features go through a BatchNorm without affine
    parameters, then a linear layer; the encoder is not trained. Features are
    computed once, so this takes seconds for small data.

    Args:
        encoder: a `keras_mae.MAEEncoder` (or any model returning tokens
            `(batch, 1 + L, dim)`).
        train: `(images, labels)` for training the classifier.
        test: `(images, labels)` for measuring accuracy.
        pooling: `"cls"` or `"mean"` (see `keras_mae.TokenPooling`), or a tuple
            of both to probe each from one pass of the encoder.
        epochs, batch_size, learning_rate: of the Adam-trained classifier.
        seed: int, seed of the classifier's initialisation and shuffling.

    Returns:
        float, the accuracy on `test`; a dict `{pooling: accuracy}` when
        `pooling` is a tuple.
    """
    (x_train, y_train), (x_test, y_test) = train, test
    tokens_train = np.asarray(encoder.predict(x_train, batch_size=batch_size, verbose=0))
    tokens_test = np.asarray(encoder.predict(x_test, batch_size=batch_size, verbose=0))
    if isinstance(pooling, str):
        features = (pool(tokens_train, pooling), y_train), (pool(tokens_test, pooling), y_test)
        return fit_linear_classifier(*features, epochs, batch_size, learning_rate, seed)
    return {
        name: fit_linear_classifier(
            (pool(tokens_train, name), y_train),
            (pool(tokens_test, name), y_test),
            epochs,
            batch_size,
            learning_rate,
            seed,
        )
        for name in pooling
    }


def fit_linear_classifier(train, test, epochs, batch_size, learning_rate, seed):
    """BatchNorm (no affine) + Dense on features; the test accuracy."""
    (f_train, y_train), (f_test, y_test) = train, test
    num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
    keras.utils.set_random_seed(seed)
    classifier = keras.Sequential(
        [
            keras.Input((f_train.shape[-1],)),
            keras.layers.BatchNormalization(center=False, scale=False, epsilon=1e-6),
            keras.layers.Dense(
                num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)
            ),
        ]
    )
    classifier.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    classifier.fit(f_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    return float(classifier.evaluate(f_test, y_test, verbose=0, return_dict=True)["accuracy"])
