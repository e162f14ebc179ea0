import os

import numpy as np
import pytest

from keras_mae.data.image_folder import list_image_folder
from keras_mae.data.image_folder import load_image_folder
from keras_mae.data.image_folder import split_per_class

Image = pytest.importorskip("PIL.Image")

pytestmark = pytest.mark.backend_free


def write_images(root, split, classes, count, size=(6, 5), mode="RGB", seed=0):
    """Random PNGs (lossless, so the decoded pixels are known); returns them by path."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        folder = os.path.join(root, split, name)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            shape = (size[0], size[1]) + ((3,) if mode == "RGB" else ())
            pixels = rng.integers(0, 256, shape).astype("uint8")
            path = os.path.join(folder, f"{i:03d}.png")
            Image.fromarray(pixels, mode=mode).save(path)
            written[path] = pixels
    return written


def test_load_image_folder_decodes_every_pixel_with_sorted_class_labels(tmp_path):
    written = write_images(tmp_path, "train", ["zebra", "ant"], 3)
    images, labels, names = load_image_folder(str(tmp_path), "train", workers=2)
    assert names == ["ant", "zebra"]
    assert images.dtype == np.uint8 and images.shape == (6, 6, 5, 3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    paths, _, _ = list_image_folder(str(tmp_path), "train")
    for image, path in zip(images, paths):
        np.testing.assert_array_equal(image, written[path])


def test_grey_images_give_one_channel_and_test_split_uses_train_classes(tmp_path):
    write_images(tmp_path, "train", ["a", "b", "c"], 1, mode="L")
    written = write_images(tmp_path, "val", ["c"], 2, mode="L", seed=1)
    images, labels, names = load_image_folder(str(tmp_path), "test")  # falls back to val
    assert images.shape == (2, 6, 5, 1) and names == ["a", "b", "c"]
    np.testing.assert_array_equal(labels, [2, 2])
    np.testing.assert_array_equal(images[0, :, :, 0], written[sorted(written)[0]])


def test_mixed_sizes_need_image_size_then_resize_and_centre_crop(tmp_path):
    write_images(tmp_path, "train", ["a"], 1, size=(6, 5))
    write_images(tmp_path, "train", ["b"], 1, size=(12, 20), seed=3)
    with pytest.raises(ValueError, match="different sizes.*image_size"):
        load_image_folder(str(tmp_path), "train")
    images, _, _ = load_image_folder(str(tmp_path), "train", image_size=(4, 4))
    assert images.shape == (2, 4, 4, 3)
    # A constant image stays constant through resize + crop.
    flat = np.full((8, 16, 3), 77, "uint8")
    Image.fromarray(flat).save(os.path.join(tmp_path, "train", "b", "flat.png"))
    images, labels, _ = load_image_folder(str(tmp_path), "train", image_size=(4, 4))
    np.testing.assert_array_equal(images[-1], np.full((4, 4, 3), 77))


def test_bad_inputs_fail_with_clear_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "train" / "a")
    with pytest.raises(FileNotFoundError, match="no images"):
        load_image_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="'test' or 'val' or 'validation'"):
        load_image_folder(str(tmp_path), "test")
    write_images(tmp_path, "train", ["a"], 1)
    with open(tmp_path / "train" / "a" / "broken.jpg", "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot decode image file.*broken.jpg"):
        load_image_folder(str(tmp_path))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_image_folder(str(tmp_path), channels=2)


def test_split_per_class_holds_out_the_last_files_of_each_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    train, held = split_per_class(labels, 2)
    np.testing.assert_array_equal(train, [0, 1, 4, 7])
    np.testing.assert_array_equal(held, [2, 3, 5, 6, 8, 9])
    with pytest.raises(ValueError, match="class 1 has 3 images"):
        split_per_class(labels, 3)
