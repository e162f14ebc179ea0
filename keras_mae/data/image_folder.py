"""Image folders (`PATH/<split>/<class>/*.jpg|png`) read into numpy, without TensorFlow.

`list_image_folder` finds the files and labels (the tf.data pipeline uses it
too); `load_image_folder` decodes them with Pillow into one `uint8` array, for
data sets that fit in memory (CIFAR-10: 150 MB) and for machines without
TensorFlow. Such an array feeds `fit` directly, with augmentation running on the
accelerator inside the model (`MaskedAutoencoder(augmentation=...)`).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
EVAL_SPLITS = ("test", "val", "validation")


def find_split_dir(root, split):
    """`root/split`; for an evaluation split also `root/val` or `root/validation`."""
    candidates = (split,) if split == "train" else (split,) + EVAL_SPLITS
    for name in candidates:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(
        f"no {' or '.join(repr(c) for c in dict.fromkeys(candidates))} folder in {root!r}: "
        "expected the layout PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg "
        "(or PATH/val/...)."
    )


def class_folders(split_dir):
    return sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))


def list_image_folder(root, split="train"):
    """Files and labels of `root/<split>/<class>/`, classes sorted by name.

    An evaluation split takes the training split's class list (when there is
    one), so that label ids agree.

    Returns:
        A tuple `(paths, labels, class_names)`: file paths sorted by class, then
        by file name; int64 labels `(N,)`; class names.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"folder {root!r} does not exist.")
    split_dir = find_split_dir(root, split)
    class_names = class_folders(split_dir)
    if split != "train":
        try:
            class_names = class_folders(find_split_dir(root, "train"))
        except FileNotFoundError:
            pass
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(split_dir, name)
        if not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {split_dir!r}."
        )
    return paths, np.asarray(labels, "int64"), class_names


def decode(path, size, mode):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = resize_center_crop(image, size)
            array = np.asarray(image, dtype="uint8")
    except OSError as error:
        raise ValueError(f"cannot decode image file {path!r}: {error}") from error
    return array[..., None] if array.ndim == 2 else array


def resize_center_crop(image, size):
    """Resize the shorter side to fit `size` (bicubic), then centre-crop to it."""
    height, width = size
    scale = max(height / image.height, width / image.width)
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(resized, resample=3)  # PIL.Image.BICUBIC
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def load_image_folder(root, split="train", image_size=None, channels=None, workers=None):
    """Decode `root/<split>/<class>/*` into one `uint8` array.

    Args:
        root: the folder holding `train/` and `test/` (or `val/`).
        split: `"train"` or `"test"` (falls back to `val` / `validation`).
        image_size: optional `(H, W)`: images are resized (shorter side,
            bicubic) and centre-cropped to it. Without it all images must share
            one size.
        channels: 1 or 3; by default the first image decides (grey -> 1).
        workers: decoding threads. Defaults to the CPU count.

    Returns:
        A tuple `(images, labels, class_names)`: `(N, H, W, C)` uint8, `(N,)`
        int64, class names.

    Example:
    >>> images, labels, names = load_image_folder("cifar10", "train")
    >>> images.shape, images.dtype
    ((50000, 32, 32, 3), dtype('uint8'))
    """
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            "reading image folders without TensorFlow needs Pillow: pip install pillow"
        ) from error
    paths, labels, class_names = list_image_folder(root, split)
    if channels is None:
        with Image.open(paths[0]) as first:
            channels = 1 if first.mode in ("L", "I", "I;16", "F", "1") else 3
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    mode = "L" if channels == 1 else "RGB"
    size = None if image_size is None else tuple(int(s) for s in image_size)
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        arrays = list(pool.map(lambda p: decode(p, size, mode), paths, chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"images under {root!r} have different sizes ({sorted(shapes)[:3]} ...): "
            "pass image_size=(H, W) to resize and centre-crop them to one size."
        )
    return np.stack(arrays), labels, class_names


def split_per_class(labels, holdout_per_class):
    """Indices `(train, held_out)`: the last `holdout_per_class` of each class held out.

    With files listed by class and name (`list_image_folder`), "last" means the
    last file names of each class, a split that does not depend on a seed.
    """
    labels = np.asarray(labels)
    train, held = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if holdout_per_class >= len(members):
            raise ValueError(
                f"class {label} has {len(members)} images: cannot hold out "
                f"{holdout_per_class} of them and still train on it."
            )
        cut = len(members) - holdout_per_class
        train.append(members[:cut])
        held.append(members[cut:])
    return np.concatenate(train), np.concatenate(held)
