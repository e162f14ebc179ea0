"""Input pipelines.

`keras_mae.data.image_folder` reads image folders into numpy with Pillow (no
TensorFlow). Everything else here is the tf.data pipeline, which feeds `fit`
under every Keras backend; its names are imported from `tf_pipeline` on first
use, so that `import keras_mae.data.image_folder` works without TensorFlow.
`import keras_mae` imports neither.
"""

import importlib

TF_PIPELINE_NAMES = (
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArraySource",
    "FolderSource",
    "TFDSSource",
    "default_mean_std",
    "denormalize",
    "eval_dataset",
    "finetune_augmentations",
    "load_source",
    "materialize",
    "measure_throughput",
    "random_resized_crop",
    "random_resized_crop_box",
    "resize_center_crop",
    "take_images",
    "train_dataset",
)


def __getattr__(name):
    if name in TF_PIPELINE_NAMES:
        return getattr(importlib.import_module("keras_mae.data.tf_pipeline"), name)
    raise AttributeError(f"module 'keras_mae.data' has no attribute {name!r}")


def __dir__():
    return sorted((*globals(), *TF_PIPELINE_NAMES))
