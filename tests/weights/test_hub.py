"""`from_preset("hf://ORG/NAME")`: ViTMAE repositories through the Hugging Face cache.

Nothing is downloaded: each test builds a cache in huggingface_hub's own layout
(`models--ORG--NAME/{blobs, snapshots/<commit>, refs/<branch>}`, files as links to
their blobs) from tiny `ViTMAEForPreTraining` models written by `save_pretrained`,
and runs with `HF_HUB_OFFLINE=1`. huggingface_hub reads `HF_HUB_CACHE` and
`HF_HUB_OFFLINE` once, when it is imported: in-process tests set its `constants`
(and the environment, for anything imported later); the command-line test starts a
fresh process with `HF_HOME` and `HF_HUB_OFFLINE=1` in its environment only.
Models are checked against transformers for the same `noise` (relative error
max|a - b| / max|b| below 1e-5).
"""

import hashlib
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import keras
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

import keras_mae  # noqa: E402
from keras_mae.weights import hub  # noqa: E402
from keras_mae.weights.config import ARCHITECTURE  # noqa: E402
from keras_mae.weights.config import config_from_hf  # noqa: E402
from tests.conftest import to_numpy  # noqa: E402
from tests.helpers import mae_oracle_utils as oracle  # noqa: E402
from tests.helpers.backend_grads import rel_err  # noqa: E402

TOLERANCE = 1e-5
REPO = "keras-mae-tests/vit-mae-tiny"
BIN_REPO = "keras-mae-tests/vit-mae-tiny-bin"
VIT_REPO = "keras-mae-tests/vit-classifier"


def commit_hash(text):
    return hashlib.sha1(text.encode()).hexdigest()


MAIN_COMMIT = commit_hash("main")
V1_COMMIT = commit_hash("v1")


def add_snapshot(cache, repo_id, commit, files, refs=()):
    """Put `files` ({name: path}) into the cache as huggingface_hub does."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        data = open(path, "rb").read()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.join("..", "..", "blobs", blob.name))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def hf_models():
    """Two tiny HF models: the `main` revision and the `v1` one."""
    return {"main": oracle.random_hf_model(seed=0), "v1": oracle.random_hf_model(seed=1)}


@pytest.fixture(scope="module")
def cache_root(hf_models, tmp_path_factory):
    """`HF_HOME` with a `hub` cache holding the test repositories."""
    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"
    written = tmp_path_factory.mktemp("written")
    for revision, model in hf_models.items():
        model.save_pretrained(str(written / revision))
    files = {name: written / "main" / name for name in ("config.json", "model.safetensors")}
    add_snapshot(cache, REPO, MAIN_COMMIT, files, refs=("main",))
    files = {name: written / "v1" / name for name in ("config.json", "model.safetensors")}
    add_snapshot(cache, REPO, V1_COMMIT, files, refs=("v1",))
    # A repository with pytorch_model.bin only (older uploads).
    torch.save(hf_models["main"].state_dict(), written / "pytorch_model.bin")
    files = {"config.json": written / "main" / "config.json"}
    files["pytorch_model.bin"] = written / "pytorch_model.bin"
    add_snapshot(cache, BIN_REPO, MAIN_COMMIT, files, refs=("main",))
    # A plain ViT classifier: not a ViTMAE.
    vit_config = written / "vit_config.json"
    vit_config.write_text(
        json.dumps({"model_type": "vit", "architectures": ["ViTForImageClassification"]})
    )
    add_snapshot(cache, VIT_REPO, MAIN_COMMIT, {"config.json": vit_config}, refs=("main",))
    return home


@pytest.fixture
def offline_cache(cache_root, monkeypatch):
    """The test cache, offline, as `HF_HUB_CACHE` and `HF_HUB_OFFLINE=1` would give."""
    cache = str(cache_root / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def keras_outputs(mae, images, noise):
    out = mae({"images": images, "noise": noise})
    loss = float(to_numpy(mae.compute_loss({"images": images, "noise": noise})))
    return to_numpy(out["pred"]), to_numpy(out["mask"]), loss


def test_hub_name_matches_transformers(hf_models, offline_cache):
    images, noise = oracle.images_and_noise()
    ref = oracle.hf_outputs(hf_models["main"], images, noise)
    mae = keras_mae.MaskedAutoencoder.from_preset(f"hf://{REPO}")
    assert (mae.hidden_dim, mae.num_layers, mae.decoder_hidden_dim) == (32, 2, 16)
    pred, mask, loss = keras_outputs(mae, images, noise)
    np.testing.assert_array_equal(mask, ref["mask"])
    error = rel_err(pred, ref["pred"])
    print(f"\n[{keras.backend.backend()}] hf://{REPO} pred vs transformers: rel {error:.3g}")
    assert error <= TOLERANCE
    assert abs(loss - ref["loss"]) <= TOLERANCE * abs(ref["loss"])

    # The encoder from the same repository: the decoder entries are ignored.
    with pytest.warns(UserWarning, match="ignored .* decoder entries"):
        encoder = keras_mae.MAEEncoder.from_preset(f"hf://{REPO}")
    tokens = oracle.hf_encoder_tokens(hf_models["main"], images)
    assert rel_err(to_numpy(encoder(images)), tokens) <= TOLERANCE


@pytest.mark.parametrize(
    "name, options",
    [(f"hf://{REPO}@{V1_COMMIT}", {}), (f"hf://{REPO}", {"revision": "v1"})],
    ids=["commit_in_name", "branch_keyword"],
)
def test_revision_selects_the_snapshot(hf_models, offline_cache, name, options):
    images, noise = oracle.images_and_noise(seed=1)
    ref = oracle.hf_outputs(hf_models["v1"], images, noise)
    main = oracle.hf_outputs(hf_models["main"], images, noise)
    assert rel_err(main["pred"], ref["pred"]) > 1e-2  # the revisions differ
    mae = keras_mae.MaskedAutoencoder.from_preset(name, **options)
    pred, _, _ = keras_outputs(mae, images, noise)
    assert rel_err(pred, ref["pred"]) <= TOLERANCE


def test_two_revisions_are_refused(offline_cache):
    with pytest.raises(ValueError, match=r"two revisions .*'v1' in the name and revision='main'"):
        keras_mae.MaskedAutoencoder.from_preset(f"hf://{REPO}@v1", revision="main")


def test_pytorch_model_bin_repository(offline_cache):
    from_bin = keras_mae.MaskedAutoencoder.from_preset(f"hf://{BIN_REPO}")
    from_safetensors = keras_mae.MaskedAutoencoder.from_preset(f"hf://{REPO}")
    for a, b in zip(from_bin.weights, from_safetensors.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_settings_override_the_architecture_does_not(offline_cache):
    mae = keras_mae.MaskedAutoencoder.from_preset(
        f"hf://{REPO}", norm_pix_loss=True, mask_ratio=0.5, num_layers=2
    )
    assert mae.norm_pix_loss is True and mae.mask_ratio == 0.5 and mae.num_layers == 2
    # The architecture is config.json's: contradictions are refused, field by field.
    with pytest.raises(ValueError, match=r"num_layers: argument 3, config.json 2"):
        keras_mae.MaskedAutoencoder.from_preset(f"hf://{REPO}", num_layers=3)
    with pytest.raises(ValueError, match=r"channels: argument 1 .*config.json 3"):
        keras_mae.MAEEncoder.from_preset(f"hf://{REPO}", image_shape=(32, 32, 1))
    with pytest.raises(ValueError, match=r"hidden_dim: preset 768, config.json 32"):
        keras_mae.MaskedAutoencoder.from_official_checkpoint(
            f"hf://{REPO}", preset="mae_vit_base_patch16"
        )
    with pytest.raises(ValueError, match="revision apply to Hugging Face Hub names"):
        keras_mae.MaskedAutoencoder.from_preset("mae_vit_micro_patch2", revision="v1")


def test_not_a_vit_mae_repository(offline_cache):
    with pytest.raises(
        ValueError,
        match=r"is a 'vit' model \(ViTForImageClassification\), not a ViTMAE one: .*"
        r"model_type 'vit_mae'.*hf://facebook/vit-mae-base",
    ):
        keras_mae.MaskedAutoencoder.from_preset(f"hf://{VIT_REPO}")


def test_not_in_the_cache_offline(offline_cache):
    where = os.path.join(offline_cache, "models--keras-mae-tests--absent")
    with pytest.raises(FileNotFoundError) as info:
        keras_mae.MaskedAutoencoder.from_preset("hf://keras-mae-tests/absent")
    message = str(info.value)
    assert f"is not in the Hugging Face cache at {where!r}" in message
    assert "HF_HUB_OFFLINE is set" in message and "HF_HUB_CACHE" in message


def test_unknown_repository(monkeypatch):
    # What huggingface_hub raises when the Hub answers that no such repository exists.
    def hf_hub_download(repo_id, filename, **kwargs):
        response = SimpleNamespace(headers={}, status_code=404, request=None)
        raise huggingface_hub.errors.RepositoryNotFoundError(
            f"404 Client Error. Repository Not Found for url: {repo_id}/{filename}",
            response=response,
        )

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(ValueError, match=r"no Hugging Face repository 'facebook/vit-mae-bsae'"):
        keras_mae.MaskedAutoencoder.from_preset("hf://facebook/vit-mae-bsae")


@pytest.mark.parametrize("name", ["hf://vit-mae-base", "hf://a/b/c", "hf://facebook/x@"])
def test_malformed_names(name):
    with pytest.raises(ValueError, match="not a Hugging Face repository name"):
        keras_mae.MAEEncoder.from_preset(name)


def test_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r'pip install "keras-mae\[hub\]"'):
        keras_mae.MaskedAutoencoder.from_preset("hf://facebook/vit-mae-base")


@pytest.mark.parametrize(
    "repo, preset",
    [
        ("facebook/vit-mae-base", "mae_vit_base_patch16"),
        ("facebook/vit-mae-large", "mae_vit_large_patch16"),
        ("facebook/vit-mae-huge", "mae_vit_huge_patch14"),
    ],
)
def test_official_repositories_are_the_official_architectures(repo, preset):
    # The fields of the published config.json files (layer_norm_eps as published).
    size = {"base": (768, 12, 12), "large": (1024, 24, 16), "huge": (1280, 32, 16)}
    hidden, layers, heads = size[repo.rsplit("-", 1)[1]]
    published = {
        "model_type": "vit_mae",
        "architectures": ["ViTMAEForPreTraining"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": 4 * hidden,
        "decoder_hidden_size": 512,
        "decoder_num_hidden_layers": 8,
        "decoder_num_attention_heads": 16,
        "decoder_intermediate_size": 2048,
        "image_size": 224,
        "patch_size": 14 if "huge" in repo else 16,
        "num_channels": 3,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "layer_norm_eps": 1e-12,
        "mask_ratio": 0.75,
        "norm_pix_loss": False,
    }
    assert repo in hub.OFFICIAL_REPOSITORIES
    config = config_from_hf(published)
    defaults = {"mlp_ratio": 4.0, "mask_ratio": 0.75, "norm_pix_loss": False}
    expected = {**defaults, **keras_mae.MaskedAutoencoder.preset_config(preset)}
    for key in ARCHITECTURE + ("image_shape", "mask_ratio", "norm_pix_loss"):
        assert config[key] == expected[key], key


def test_command_line_honours_hf_home(hf_models, cache_root, tmp_path):
    # A fresh process: HF_HOME and HF_HUB_OFFLINE come from its environment alone.
    output = tmp_path / "mae.keras"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(cache_root), HF_HUB_OFFLINE="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-m", "keras_mae.convert", f"hf://{REPO}", "--output", str(output)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {output}" in done.stdout
    mae = keras.models.load_model(str(output))
    images, noise = oracle.images_and_noise(seed=2)
    ref = oracle.hf_outputs(hf_models["main"], images, noise)
    pred, _, _ = keras_outputs(mae, images, noise)
    assert rel_err(pred, ref["pred"]) <= TOLERANCE
