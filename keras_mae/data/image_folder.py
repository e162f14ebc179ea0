"""Image folders (`PATH/<split>/<class>/*.jpg|png`) read into numpy, without TensorFlow.

`list_image_folder` finds the files and labels (the tf.data pipeline uses it
too); `load_image_folder` decodes them with Pillow into one `uint8` array, for
data sets that fit in memory (CIFAR-10: 150 MB) and for machines without
TensorFlow. Such an array feeds `fit` directly, with augmentation running on the
accelerator inside the model (`MaskedAutoencoder(augmentation=...)`).

Listing a folder also checks every file (`check_image_files`), so that an empty,
truncated or foreign file is named with its path before any training, instead
of failing TensorFlow's decoder in the middle of an epoch: by default the
file's signature (first bytes) and end (a JPEG's end-of-image marker, a PNG's
IEND chunk, a GIF's trailer, a BMP's declared size), with a full Pillow decode
of only the files whose end looks wrong (about 30 microseconds a file on a
local disk: 10,000 files in 0.3 s, against 3 s for decoding them all).
`check="decode"` decodes every file (slower; it also finds damage in the
middle of a file), `check=None` skips the check.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
EVAL_SPLITS = ("test", "val", "validation")
CHECKS = ("header", "decode", None)
# The formats TensorFlow's decode_image and Pillow both read, by their first bytes.
SIGNATURES = (
    ("JPEG", b"\xff\xd8\xff"),
    ("PNG", b"\x89PNG\r\n\x1a\n"),
    ("GIF", b"GIF87a"),
    ("GIF", b"GIF89a"),
    ("BMP", b"BM"),
)
HEAD_BYTES = 16
TAIL_BYTES = 1024  # a JPEG may carry padding after its end-of-image marker
MAX_LISTED = 5  # bad files named in one message


def file_format(head):
    """`"JPEG"`, `"PNG"`, `"GIF"`, `"BMP"` or `"WebP"` from a file's first bytes, or None."""
    for name, signature in SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def end_looks_complete(kind, tail, size, head):
    """Whether a file of format `kind` ends as a complete one does."""
    if kind == "JPEG":
        return b"\xff\xd9" in tail
    if kind == "PNG":
        return b"IEND" in tail[-16:]
    if kind == "GIF":
        return tail.rstrip(b"\x00").endswith(b";")
    if kind == "BMP":
        return len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size
    return True  # WebP: the signature alone


def decode_problem(path):
    """Pillow's reason for not decoding `path`, or None when it decodes."""
    try:
        from PIL import Image
    except ImportError:
        return None  # without Pillow, the signature and end checks stand alone
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # noqa: BLE001  (Pillow raises many types on bad data)
        return f"{type(error).__name__}: {error}"
    return None


def image_file_problem(path, check="header"):
    """Why `path` is not a readable image, or None.

    Args:
        path: the file.
        check: `"header"` (signature and end; a full decode only when the end
            looks wrong) or `"decode"` (a full Pillow decode as well).
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    except OSError as error:
        return f"cannot be read ({error})"
    kind = file_format(head)
    if kind is None:
        return f"not a JPEG, PNG, GIF, BMP or WebP file (it starts with {head[:10]!r})"
    if check == "decode" or not end_looks_complete(kind, tail, size, head):
        problem = decode_problem(path)
        if problem is not None:
            return f"a damaged or truncated {kind} file of {size} bytes ({problem})"
    return None


def check_image_files(paths, check="header", where=None, workers=None):
    """Refuse unreadable image files, naming each with its path.

    Args:
        paths: the files.
        check: `"header"`, `"decode"` or None (no check); see `image_file_problem`.
        where: the folder, for the message.
        workers: threads, for slow (network) file systems. Defaults to None:
            one loop, faster on a local disk.

    Raises:
        ValueError: `cannot decode image file(s) ...`, with the path and reason
            of up to five bad files, how many there are, and what to do.
    """
    if check not in CHECKS:
        raise ValueError(f"check must be 'header', 'decode' or None. Received: check={check!r}")
    if check is None or not paths:
        return
    if workers is None:
        # Reading 1 KB a file is cheaper than handing it to a thread (0.3 s for
        # 10,000 files on a local disk, against 1 s through a pool of 8).
        problems = [image_file_problem(path, check) for path in paths]
    else:
        with ThreadPoolExecutor(workers) as pool:
            problems = list(pool.map(lambda p: image_file_problem(p, check), paths))
    bad = [(path, problem) for path, problem in zip(paths, problems) if problem]
    if not bad:
        return
    listed = "; ".join(f"{path!r}: {problem}" for path, problem in bad[:MAX_LISTED])
    more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
    under = f" under {where!r}" if where else ""
    head = (
        "cannot decode image file "
        if len(bad) == 1
        else f"cannot decode image files: {len(bad)} of {len(paths)}{under}: "
    )
    raise ValueError(
        f"{head}{listed}{more}. {len(bad)} of {len(paths)} files{under} cannot be "
        "decoded: delete or replace them (e.g. re-download or re-extract the data set), "
        "then run again."
    )


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


def list_image_folder(root, split="train", check="header"):
    """Files and labels of `root/<split>/<class>/`, classes sorted by name.

    An evaluation split takes the training split's class list (when there is
    one), so that label ids agree. Every file is checked first
    (`check_image_files`): an unreadable one raises a `ValueError` naming it.

    Args:
        root: the folder holding `train/` and `test/` (or `val/`).
        split: `"train"` or `"test"` (falls back to `val` / `validation`).
        check: `"header"` (default: each file's signature and end, fast),
            `"decode"` (a full decode of every file) or None (no check).

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
    check_image_files(paths, check, where=split_dir)
    return paths, np.asarray(labels, "int64"), class_names


def decode(path, size, mode):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = pillow_resize_center_crop(image, size)
            array = np.asarray(image, dtype="uint8")
    except OSError as error:
        raise ValueError(f"cannot decode image file {path!r}: {error}") from error
    return array[..., None] if array.ndim == 2 else array


def pillow_resize_center_crop(image, size):
    """Resize a Pillow image just enough to cover `size` (bicubic), then centre-crop to it.

    For decoding a folder into one array; the tf.data evaluation transform,
    `keras_mae.data.eval_resize_center_crop`, works on tensors and leaves a
    margin (`crop_fraction`).
    """
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

    ```python
    images, labels, names = load_image_folder("cifar10", "train")
    images.shape, images.dtype  # ((50000, 32, 32, 3), dtype('uint8'))
    ```
    """
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(
            "reading image folders without TensorFlow needs Pillow: pip install pillow"
        ) from error
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
    # The listing's check names every bad file at once, before the decoding.
    paths, labels, class_names = list_image_folder(root, split)
    if channels is None:
        with Image.open(paths[0]) as first:
            channels = 1 if first.mode in ("L", "I", "I;16", "F", "1") else 3
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
