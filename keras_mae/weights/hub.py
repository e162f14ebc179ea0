"""Hugging Face ViTMAE repositories on the Hub, by name: `hf://ORG/NAME[@REVISION]`.

`MaskedAutoencoder.from_preset("hf://facebook/vit-mae-base")` (and `MAEEncoder`'s)
comes here: `config.json` is fetched first (and refused unless its `model_type` is
`"vit_mae"`), then the weights (`model.safetensors`, sharded safetensors, or
`pytorch_model.bin`), all with `huggingface_hub.hf_hub_download`, so its cache,
`HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE=1`, `HF_TOKEN` and revisions work as
they do for transformers. The files then go through the same converter as a local
`save_pretrained` directory (`keras_mae.weights.loader`), all or nothing.

`huggingface_hub` is an optional dependency (`pip install "keras-mae[hub]"`),
imported only when a `hf://` name is loaded.
"""

import json
import os

from keras_mae.weights.assign import load_official_weights
from keras_mae.weights.config import build_config
from keras_mae.weights.readers import read_checkpoint

HUB_PREFIX = "hf://"
# The official MAE weights as transformers publishes them (ViTMAEForPreTraining).
OFFICIAL_REPOSITORIES = (
    "facebook/vit-mae-base",
    "facebook/vit-mae-large",
    "facebook/vit-mae-huge",
)
# Tried in this order; the first the repository has is used (as transformers does).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# The download options of `from_preset("hf://...")`, as in transformers' `from_pretrained`.
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download")
# What `fetch` returns for a file it could not get.
NOT_CACHED = "not cached"  # offline (or the Hub unreachable) and not in the cache
NOT_IN_REPOSITORY = "not in the repository"

HUB_MISSING = (
    "loading {name!r} from the Hugging Face Hub needs the huggingface_hub package, which "
    'is not installed: `pip install "keras-mae[hub]"` (or `pip install huggingface_hub`). '
    "A repository already downloaded can also be loaded as a directory: "
    "`from_official_checkpoint(DIRECTORY)`."
)


def is_hub_name(name):
    """True for a `hf://ORG/NAME` preset name."""
    return isinstance(name, str) and name.startswith(HUB_PREFIX)


def parse_hub_name(name, revision=None):
    """`"hf://ORG/NAME@REVISION"` -> `("ORG/NAME", REVISION)`.

    Args:
        name: str, `hf://ORG/NAME` or `hf://ORG/NAME@REVISION` (a branch, a tag or
            a commit hash).
        revision: str or None, the revision as a keyword; it must agree with an
            `@REVISION` in the name.

    Returns:
        `(repo_id, revision)`; revision None means the default branch.
    """
    if not is_hub_name(name):
        raise ValueError(f"{name!r} is not a Hugging Face Hub name: expected 'hf://ORG/NAME'.")
    repo_id, at, named_revision = name[len(HUB_PREFIX) :].partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (at and not named_revision):
        raise ValueError(
            f"{name!r} is not a Hugging Face repository name: expected 'hf://ORG/NAME' or "
            "'hf://ORG/NAME@REVISION', e.g. 'hf://facebook/vit-mae-base'."
        )
    if named_revision and revision is not None and revision != named_revision:
        raise ValueError(
            f"two revisions for {name!r}: {named_revision!r} in the name and "
            f"revision={revision!r}. Give one of them."
        )
    return repo_id, named_revision or revision


def import_hub(name):
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError:
        raise ImportError(HUB_MISSING.format(name=name)) from None
    return huggingface_hub


def repository_cache(huggingface_hub, repo_id, cache_dir):
    """Where the cache keeps `repo_id` (`HF_HUB_CACHE/models--ORG--NAME`)."""
    root = cache_dir if cache_dir is not None else huggingface_hub.constants.HF_HUB_CACHE
    folder = "models--" + repo_id.replace("/", "--")
    return os.path.join(os.path.abspath(os.path.expanduser(os.fspath(root))), folder)


def not_cached_error(huggingface_hub, name, repo_id, revision, cache_dir, files, local_only):
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        reason = "offline mode is on (HF_HUB_OFFLINE is set): unset HF_HUB_OFFLINE to download it"
    elif local_only:
        reason = "local_files_only=True: pass local_files_only=False to download it"
    else:
        reason = "the Hub could not be reached: check the connection (or HF_ENDPOINT) and retry"
    return FileNotFoundError(
        f"{name!r} (revision {revision or 'main'!r}: {', '.join(files)}) is not in the "
        f"Hugging Face cache at {repository_cache(huggingface_hub, repo_id, cache_dir)!r}, "
        f"and {reason}. Or download it where huggingface.co is reachable (loading it "
        f"once there, or `hf download {repo_id} config.json model.safetensors`) and point "
        "HF_HUB_CACHE (or HF_HOME) at that cache; a downloaded directory also loads with "
        "from_official_checkpoint(DIRECTORY)."
    )


def fetch(huggingface_hub, name, filename, repo_id, revision, options):
    """`hf_hub_download` of one file, its errors said in keras-mae's words.

    Returns the local path, `NOT_CACHED` or `NOT_IN_REPOSITORY`."""
    errors = huggingface_hub.errors
    try:
        return huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, library_name="keras-mae", **options
        )
    except errors.GatedRepoError:
        raise PermissionError(
            f"{name!r} is a gated repository: accept its conditions on "
            f"https://huggingface.co/{repo_id}, then log in (`hf auth login`) or pass "
            "token=... (or set HF_TOKEN)."
        ) from None
    except errors.RepositoryNotFoundError:
        raise ValueError(
            f"no Hugging Face repository {repo_id!r} ({name!r}): check the name (a private "
            "repository needs a login, `hf auth login`, or token=...). The official MAE "
            "weights are " + ", ".join(f"'hf://{r}'" for r in OFFICIAL_REPOSITORIES) + "."
        ) from None
    except errors.RevisionNotFoundError:
        raise ValueError(
            f"the repository {repo_id!r} has no revision {revision!r} ({name!r}): give a "
            "branch, a tag or a commit hash of it, or no revision for 'main'."
        ) from None
    except errors.HFValidationError as e:
        raise ValueError(f"{name!r} is not a valid Hugging Face repository name: {e}") from None
    except errors.LocalEntryNotFoundError:
        # Offline, or the Hub unreachable, and not in the cache: the caller decides.
        return NOT_CACHED
    except errors.EntryNotFoundError:
        return NOT_IN_REPOSITORY


def download_hub_checkpoint(
    name,
    revision=None,
    cache_dir=None,
    token=None,
    local_files_only=False,
    force_download=False,
):
    """The local directory of a Hub ViTMAE repository: `config.json` and weights.

    Downloads only what is not cached yet (nothing with `HF_HUB_OFFLINE=1`).

    Args:
        name: str, `hf://ORG/NAME` or `hf://ORG/NAME@REVISION`.
        revision: str or None, a branch, tag or commit hash (default: `main`).
        cache_dir: str or None, the cache (default: huggingface_hub's,
            `HF_HUB_CACHE` or `HF_HOME/hub`).
        token: str, bool or None, as in huggingface_hub (default: the login or
            `HF_TOKEN`).
        local_files_only: bool, never ask the Hub, use the cache only.
        force_download: bool, download again even if cached.

    Returns:
        A tuple `(directory, hf_config)`: the snapshot directory holding the files
        and the parsed `config.json`.
    """
    huggingface_hub = import_hub(name)
    repo_id, revision = parse_hub_name(name, revision)
    options = dict(
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
        force_download=force_download,
    )

    def not_cached(files):
        return not_cached_error(
            huggingface_hub, name, repo_id, revision, cache_dir, files, local_files_only
        )

    config_path = fetch(huggingface_hub, name, "config.json", repo_id, revision, options)
    if config_path == NOT_CACHED:
        raise not_cached(["config.json"])
    if config_path == NOT_IN_REPOSITORY:
        raise ValueError(
            f"the repository {repo_id!r} ({name!r}) has no config.json: it is not a "
            "transformers model. keras-mae loads Hugging Face ViTMAE repositories, e.g. "
            + ", ".join(f"'hf://{r}'" for r in OFFICIAL_REPOSITORIES)
            + "."
        )
    with open(config_path) as f:
        try:
            hf_config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name!r}: config.json is not valid JSON: {e}") from None
    check_vit_mae(hf_config, name)

    uncached = []
    for filename in WEIGHT_FILES:
        path = fetch(huggingface_hub, name, filename, repo_id, revision, options)
        if path == NOT_CACHED:
            uncached.append(filename)
        elif path != NOT_IN_REPOSITORY:
            break
    else:
        if uncached:
            raise not_cached(uncached)
        raise ValueError(
            f"the repository {repo_id!r} ({name!r}) holds no weights that keras-mae reads: "
            f"expected one of {', '.join(WEIGHT_FILES)} (as transformers' save_pretrained "
            "writes)."
        )
    if filename.endswith(".index.json"):
        with open(path) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        missing = []
        for shard in shards:
            if fetch(huggingface_hub, name, shard, repo_id, revision, options) in (
                NOT_CACHED,
                NOT_IN_REPOSITORY,
            ):
                missing.append(shard)
        if missing:
            raise not_cached(missing)
    return os.path.dirname(config_path), hf_config


def check_vit_mae(hf_config, name):
    """Refuse a config.json that is not a ViTMAE one, saying what it is."""
    model_type = hf_config.get("model_type")
    if model_type == "vit_mae":
        return
    architectures = hf_config.get("architectures") or []
    what = f"a {model_type!r} model" if model_type else "a config.json without model_type"
    if architectures:
        what += f" ({', '.join(map(str, architectures))})"
    raise ValueError(
        f"{name!r} is {what}, not a ViTMAE one: keras-mae loads Hugging Face ViTMAE "
        "repositories (config.json model_type 'vit_mae': ViTMAEForPreTraining or "
        "ViTMAEModel), e.g. " + ", ".join(f"'hf://{r}'" for r in OFFICIAL_REPOSITORIES) + "."
    )


def load_hub_checkpoint(name, cls, preset=None, **kwargs):
    """A `cls` model with the weights of a Hub ViTMAE repository.

    Args:
        name: str, `hf://ORG/NAME` or `hf://ORG/NAME@REVISION`.
        cls: `keras_mae.MaskedAutoencoder` (a `ViTMAEForPreTraining` repository),
            `keras_mae.MAEEncoder` (either kind; decoder entries are ignored with a
            notice) or a subclass.
        preset: str or None; the architecture is the repository's
            `config.json`, and a preset that contradicts it is refused
            (`keras_mae.weights.config.build_config`).
        **kwargs: the download options `revision`, `cache_dir`, `token`,
            `local_files_only`, `force_download` (see `download_hub_checkpoint`),
            and constructor arguments: settings (e.g. `norm_pix_loss=True`,
            `mask_ratio=0.9`, `dtype="bfloat16"`, `image_size=(256, 256)`);
            architecture fields that contradict `config.json` are refused.

    Returns:
        The model, every weight assigned.
    """
    options = {k: kwargs.pop(k) for k in HUB_OPTIONS if k in kwargs}
    directory, _ = download_hub_checkpoint(name, **options)
    state_dict, hf_config = read_checkpoint(directory)
    config = build_config(state_dict, hf_config, preset, kwargs, cls, source=repr(name))
    model = cls(**config)
    return load_official_weights(model, state_dict, source=repr(name))
