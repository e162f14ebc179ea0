"""Input pipelines.

`keras_mae.data.image_folder` reads image folders into numpy with Pillow, and
`keras_mae.data.arrays.load_arrays` loads a named data set into memory (no
TensorFlow); `keras_mae.data.statistics` holds the normalisation statistics.
Everything else here is the tf.data pipeline, which feeds `fit` under every
Keras backend; its names are imported from `tf_pipeline` on first use, so that
the in-memory modules work without TensorFlow. `import keras_mae` imports
neither.
"""

import importlib

from keras_mae.data.statistics import IMAGENET_MEAN
from keras_mae.data.statistics import IMAGENET_STD
from keras_mae.data.statistics import default_mean_std
from keras_mae.data.statistics import pixel_mean_std

TF_PIPELINE_NAMES = (
    "ArraySource",
    "FolderSource",
    "TFDSSource",
    "denormalize",
    "eval_dataset",
    "eval_resize_center_crop",
    "finetune_augmentations",
    "load_source",
    "materialize",
    "measure_throughput",
    "random_resized_crop",
    "random_resized_crop_box",
    "take_images",
    "train_dataset",
)


def __getattr__(name):
    if name in TF_PIPELINE_NAMES:
        return getattr(importlib.import_module("keras_mae.data.tf_pipeline"), name)
    raise AttributeError(f"module 'keras_mae.data' has no attribute {name!r}")


def __dir__():
    return sorted((*globals(), *TF_PIPELINE_NAMES))
