"""Load `.keras` files the package wrote, with every keras-mae class registered.

`keras_mae.load_model(path)` is `keras.models.load_model(path)` after two
checks that Keras does not make: the classes of keras-mae are registered (this
module is part of the package, so importing it runs `import keras_mae`), and
the file is a complete `.keras` archive. Keras reports a truncated file (an
interrupted save or download) as "File not found"; here it is refused with
its path, its size and what to do.

Example:
>>> import keras_mae
>>> encoder = keras_mae.MAEEncoder((8, 8, 1), patch_size=2, hidden_dim=16,
...                                num_layers=1, num_heads=2)
>>> encoder.save("encoder.keras")
>>> keras_mae.load_model("encoder.keras").count_params() == encoder.count_params()
True
"""

import os
import zipfile
import zlib

import keras

ZIP_MAGIC = b"PK\x03\x04"
WHAT_TO_DO = (
    "Save the model again, download the file again, or, for a training run, continue "
    "from its last checkpoint (OUTPUT_DIR/checkpoint)."
)


def check_keras_file(path):
    """Refuse anything at `path` that is not a complete `.keras` archive.

    A `.keras` file is a zip archive holding `config.json` (and usually
    `model.weights.h5`); each member's CRC is checked, so a truncated or
    corrupted file is found before Keras reads it.

    Args:
        path: str or path-like.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: `path` is a directory, not a zip archive (or one cut short),
            or an archive that holds no `config.json` or a damaged member.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no saved model at {path!r}: check the path.")
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory, not a .keras file: give the model file "
            "(e.g. mae_output/encoder.keras)."
        )
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    damaged = f"{path!r} ({size:,} bytes) is not a readable .keras file: "
    if not zipfile.is_zipfile(path):
        if head == ZIP_MAGIC:
            reason = "it begins as a zip archive but its end is missing, so it is truncated"
        elif size == 0:
            reason = "it is empty"
        else:
            reason = "it is not a zip archive, as every .keras file is"
        raise ValueError(damaged + reason + ". " + WHAT_TO_DO)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad_member = archive.testzip()  # CRC of every member
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise ValueError(
            damaged + f"the archive is damaged ({type(e).__name__}: {e}). " + WHAT_TO_DO
        ) from None
    if "config.json" not in names:
        raise ValueError(
            damaged + "the zip archive holds no config.json, so it is not a Keras model "
            f"file (members: {', '.join(sorted(names)[:5]) or 'none'}). " + WHAT_TO_DO
        )
    if bad_member is not None:
        raise ValueError(
            damaged + f"its member {bad_member!r} fails its checksum (the file is "
            "corrupted). " + WHAT_TO_DO
        )


def load_model(path, custom_objects=None, compile=True, safe_mode=True):
    """`keras.models.load_model(path)` with keras-mae registered and the file checked.

    Args:
        path: a `.keras` file written by `model.save` (or `.h5`, passed on to
            Keras unchecked).
        custom_objects, compile, safe_mode: as `keras.models.load_model`.

    Returns:
        The model; compiled (optimizer, schedule and its state) when it was
        saved compiled and `compile=True`.
    """
    path = os.fspath(path)
    if not path.endswith((".h5", ".hdf5")):
        check_keras_file(path)
    return keras.models.load_model(
        path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
    )
