"""Read checkpoint files into a flat `{name: float32 numpy array}` state dict.

Backend-neutral: PyTorch `.pth` files need `torch` (imported here, lazily, only
when such a file is read) and safetensors files need the `safetensors` package.
Nothing in the model code imports this module.

Understood containers:
- a PyTorch file (`torch.save`), whose `"model"` entry (or the whole object) is
  a state dict: the official MAE release (`mae_pretrain_vit_*.pth`,
  `mae_visualize_vit_*.pth`);
- a `.safetensors` file;
- a directory written by Hugging Face `save_pretrained`: `config.json` plus
  `model.safetensors` (or sharded safetensors with an index, or
  `pytorch_model.bin`).
"""

import json
import os
import pickle
import zipfile

import numpy as np

TORCH_MISSING = (
    "reading the PyTorch checkpoint {path!r} needs torch, which is not installed. "
    "Install the CPU build (`pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu`), or convert the file once on a machine "
    "that has torch: `python -m keras_mae.convert CHECKPOINT --output model.keras`. "
    "Nothing else in keras-mae needs torch."
)


def read_checkpoint(path):
    """Read a checkpoint file or a Hugging Face directory.

    Args:
        path: str or path-like, a `.pth`/`.bin`/`.safetensors` file or a
            `save_pretrained` directory.

    Returns:
        A tuple `(state_dict, hf_config)`: `state_dict` maps names to float32
        numpy arrays; `hf_config` is the parsed `config.json` of a Hugging Face
        directory, else None.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_hf_directory(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    if path.endswith(".safetensors"):
        return read_safetensors(path), None
    return read_torch_file(path), None


def read_hf_directory(path):
    config_path = os.path.join(path, "config.json")
    hf_config = None
    if os.path.exists(config_path):
        with open(config_path) as f:
            try:
                hf_config = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{config_path!r} is not valid JSON: {e}") from None
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    torch_bin = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(single):
        return read_safetensors(single), hf_config
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state_dict = {}
        for shard in shards:
            state_dict.update(read_safetensors(os.path.join(path, shard)))
        return state_dict, hf_config
    if os.path.exists(torch_bin):
        return read_torch_file(torch_bin), hf_config
    raise ValueError(
        f"the directory {path!r} holds no weights: expected model.safetensors, "
        "model.safetensors.index.json or pytorch_model.bin (as written by "
        "Hugging Face save_pretrained)."
    )


def read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(
            f"reading {path!r} needs the safetensors package: `pip install safetensors`."
        ) from None
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(
            f"could not read {path!r} as a safetensors file ({type(e).__name__}: {e}). "
            "The file may be truncated or not a checkpoint."
        ) from None
    return {name: np.asarray(value, dtype="float32") for name, value in tensors.items()}


EXPECTED_CHECKPOINTS = (
    "expected an official MAE .pth (torch.save of {'model': state_dict}), a "
    ".safetensors file, or a directory written by Hugging Face save_pretrained"
)
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2 = b"\x80\x02"  # torch.save before PyTorch 1.6 (legacy format)


def not_a_torch_checkpoint(path, reason):
    size = os.path.getsize(path)
    return ValueError(
        f"{path!r} ({size:,} bytes) is not a readable PyTorch checkpoint: {reason}; "
        f"{EXPECTED_CHECKPOINTS}. The file may be truncated or not a checkpoint: "
        "download or save it again."
    )


def check_torch_file(path):
    """Refuse a file that is neither torch's zip format nor its legacy pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path) or head.startswith(PICKLE_PROTOCOL_2):
        return
    if head == ZIP_MAGIC:
        raise not_a_torch_checkpoint(
            path, "it begins as torch's zip format but its end is missing (truncated)"
        )
    raise not_a_torch_checkpoint(
        path, "it is neither torch's zip format nor its legacy pickle format"
    )


def read_torch_file(path):
    try:
        import torch
    except ImportError:
        raise ImportError(TORCH_MISSING.format(path=path)) from None
    check_torch_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsupported = [line for line in str(e).splitlines() if "Unsupported global" in line]
        if not unsupported:
            raise not_a_torch_checkpoint(path, f"torch could not unpickle it ({e})") from None
        found = unsupported[0].split("Unsupported global:")[-1].split(" was not")[0].strip()
        raise ValueError(
            f"{path!r} holds Python objects besides tensors ({found}). keras-mae reads "
            ".pth files with torch.load(weights_only=True), which runs no code from the "
            "file, and needs only the weights. If you trust the file, keep its state dict "
            "in a new one once: torch.save({'model': torch.load(PATH, weights_only=False)"
            "['model']}, 'weights_only.pth'), and read that."
        ) from None
    except Exception as e:  # zip and torch errors alike
        message = str(e).splitlines()[0] if str(e) else ""
        raise not_a_torch_checkpoint(
            path, f"torch could not read it ({type(e).__name__}: {message})"
        ) from None
    state_dict = checkpoint
    if isinstance(checkpoint, dict):
        for key in ("model", "state_dict"):
            if isinstance(checkpoint.get(key), dict):
                state_dict = checkpoint[key]
                break
    if (
        not isinstance(state_dict, dict)
        or not state_dict
        or not all(isinstance(v, torch.Tensor) for v in state_dict.values())
    ):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint)
        raise ValueError(
            f"{path!r} is a PyTorch file but holds no state dict: expected "
            f"{{'model': state_dict}} or a state dict of tensors. Found: {found}"
        )
    return {
        name: tensor.detach().to("cpu", torch.float32).numpy()
        for name, tensor in state_dict.items()
    }
