"""Input pipelines (tf.data, under every Keras backend).

Importing this package imports TensorFlow; `import keras_mae` does not.
"""

from keras_mae.data.tf_pipeline import IMAGENET_MEAN
from keras_mae.data.tf_pipeline import IMAGENET_STD
from keras_mae.data.tf_pipeline import ArraySource
from keras_mae.data.tf_pipeline import FolderSource
from keras_mae.data.tf_pipeline import TFDSSource
from keras_mae.data.tf_pipeline import default_mean_std
from keras_mae.data.tf_pipeline import denormalize
from keras_mae.data.tf_pipeline import eval_dataset
from keras_mae.data.tf_pipeline import load_source
from keras_mae.data.tf_pipeline import materialize
from keras_mae.data.tf_pipeline import measure_throughput
from keras_mae.data.tf_pipeline import random_resized_crop
from keras_mae.data.tf_pipeline import random_resized_crop_box
from keras_mae.data.tf_pipeline import resize_center_crop
from keras_mae.data.tf_pipeline import take_images
from keras_mae.data.tf_pipeline import train_dataset
