"""sae_lib.push: upload layout, model card, token handling; only HfApi's network methods are replaced."""

import json

import pytest
import torch
from huggingface_hub import HfApi
from sae_lens import SAE

from sae_lib import constants
from sae_lib import latent_index as li
from sae_lib import push as hub
from sae_lib.errors import CompatibilityError, InputError, SAELoadError
from sae_lib.explain.store import explanations_path, save_explanations
from sae_lib.sae import load_sae
from tests.conftest import TINY_HOOK

SMALL_INDEX = li.IndexConfig(n_bins=16, top_k=2, n_lower_examples=1, window=4, window_before=2, batch_size=4)


def tiny_index(tiny_model, sae, seed=0):
    tokens = torch.randint(0, tiny_model.cfg.d_vocab, (4, 8), generator=torch.Generator().manual_seed(seed))
    return li.build_index(tiny_model, sae, tokens, SMALL_INDEX)


@pytest.fixture
def sae_dir(tmp_path, tiny_sae, tiny_model):
    folder = tmp_path / "sae"
    tiny_sae.save_model(str(folder))
    li.save_index(tiny_index(tiny_model, tiny_sae), folder)
    (folder / "runner_cfg.json").write_text(json.dumps({"model_name": "tiny-qwen3", "training_tokens": 123_456}))
    (folder / constants.EVALS_FILENAME).write_text(json.dumps({"summary": {"explained_variance": 0.8125, "l0": 17.5,
                                                                           "dead_fraction": 0.0625, "n_tokens": 640}}))
    (folder / "train_job.json").write_text("{}")
    (folder / "checkpoints" / "run" / "100").mkdir(parents=True)
    return folder


def test_staged_folder_is_the_saelens_layout_and_loads(sae_dir, tmp_path, tiny_sae):
    target = hub.stage_upload(sae_dir, "me/saes", None, tmp_path / "stage")
    assert target == tmp_path / "stage" / TINY_HOOK  # default sae_id: the hook name
    names = {p.name for p in target.iterdir()}
    assert names == {"cfg.json", "sae_weights.safetensors", "runner_cfg.json", "evals.json", "latent_index.json",
                     "latent_index.safetensors", "latent_contexts.parquet", "latent_counts.safetensors", "README.md"}
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["README.md", TINY_HOOK]
    loaded = SAE.load_from_disk(str(target))
    torch.testing.assert_close(loaded.W_enc, tiny_sae.W_enc)
    card = (tmp_path / "stage" / "README.md").read_text()
    for fact in ("library_name: saelens", "`tiny-qwen3`", f"`{TINY_HOOK}`", "32 -> 96 latents (3x)", "123,456",
                 "81.2%", "17.5", "6.2%", f'SAE.from_pretrained("me/saes", "{TINY_HOOK}")'):
        assert fact in card, fact
    with pytest.raises(InputError, match="already has files"):
        hub.stage_upload(sae_dir, "me/saes", None, tmp_path / "stage")


def test_not_an_sae_folder(tmp_path):
    with pytest.raises(SAELoadError, match="not an SAE folder: cfg.json, sae_weights.safetensors missing"):
        hub.check_sae_folder(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    (tmp_path / "sae_weights.safetensors").write_text("")
    with pytest.raises(SAELoadError, match="not valid JSON"):
        hub.check_sae_folder(tmp_path)
    with pytest.raises(SAELoadError, match="is not a folder"):
        hub.check_sae_folder(tmp_path / "nope")


def test_a_training_checkpoint_is_not_published(tmp_path, tiny_sae):
    # Its weights expect SAELens's activation scaling, which the published files would not carry: every
    # SAE.from_pretrained of them would read wrong latents. A finished SAE's folder (factor folded in,
    # null in the file) goes up.
    folder = tmp_path / "40960"
    tiny_sae.save_model(str(folder))
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 2.5, "has_whitening": False}))
    with pytest.raises(SAELoadError, match=r"training checkpoint.*factor 2\.5.*Push the finished SAE"):
        hub.stage_upload(folder, "me/saes", None, tmp_path / "stage")
    assert not (tmp_path / "stage").exists()
    (folder / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None, "has_whitening": False}))
    assert (hub.stage_upload(folder, "me/saes", None, tmp_path / "stage") / "sae_weights.safetensors").is_file()


@pytest.mark.parametrize("repo", ["noslash", "a/b/c", "me/re po", "/x"])
def test_bad_repo_ids(repo):
    with pytest.raises(InputError, match="not a Hub repo id"):
        hub.check_repo_id(repo)


def test_token_comes_from_hf_token_only():
    assert hub.token_from_env({"HF_TOKEN": " hf_abc "}) == "hf_abc"
    with pytest.raises(InputError, match="HF_TOKEN is not set"):
        hub.token_from_env({"HUGGING_FACE_HUB_TOKEN": "hf_other"})


@pytest.mark.parametrize("readme_exists", [False, True])
def test_push_uploads_the_staged_folder(sae_dir, tmp_path, monkeypatch, readme_exists):
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw, self.token)))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.setdefault("branch", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "file_exists", lambda self, repo_id, filename, **kw: readme_exists)

    def upload_folder(self, **kw):
        calls["upload"] = kw
        calls["files"] = sorted(str(p.relative_to(kw["folder_path"])) for p in __import__("pathlib").Path(kw["folder_path"]).rglob("*") if p.is_file())
        return "https://huggingface.co/me/saes/commit/abc"

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    staged = tmp_path / "stage"
    hub.stage_upload(sae_dir, "me/saes", "layer1", staged)
    url = hub.push_staged(staged, "me/saes", "hf_secret", revision="v1", private=True, sae_id="layer1")
    assert url.endswith("/commit/abc")
    assert calls["create"] == ("me/saes", {"repo_type": "model", "private": True, "exist_ok": True}, "hf_secret")
    assert calls["branch"] == ("me/saes", {"branch": "v1", "exist_ok": True})
    assert calls["upload"]["repo_id"] == "me/saes" and calls["upload"]["revision"] == "v1"
    assert calls["upload"]["ignore_patterns"] == (["README.md"] if readme_exists else None)
    assert "layer1/sae_weights.safetensors" in calls["files"] and not any("checkpoints" in f for f in calls["files"])


def test_labels_counts_and_explanations_go_up_with_the_index(sae_dir, tmp_path):
    build_id = json.loads((sae_dir / constants.INDEX_META_FILENAME).read_text())["build_id"]
    save_explanations(explanations_path(sae_dir), build_id, [])
    target = hub.stage_upload(sae_dir, "me/saes", None, tmp_path / "stage")
    names = {p.name for p in target.iterdir()}
    assert {constants.INDEX_COUNTS_FILENAME, constants.EXPLANATIONS_FILENAME} <= names


def test_an_index_of_other_weights_or_explanations_of_another_build_are_not_published(sae_dir, tmp_path, tiny_sae, tiny_model):
    """push_to_hub.py published whatever index and explanations lay in the folder, though the app and
    explain_latents.py refuse an index of other SAE weights, and explanations of another index build."""
    own = json.loads((sae_dir / constants.INDEX_META_FILENAME).read_text())["build_id"]
    other = load_sae(str(sae_dir), device="cpu").sae
    with torch.no_grad():
        other.W_enc.mul_(1.5)  # another SAE of the same shape: the index of a retrained or copied-over run
    li.save_index(tiny_index(tiny_model, other), sae_dir)
    with pytest.raises(CompatibilityError, match="built for different SAE weights"):
        hub.stage_upload(sae_dir, "me/saes", None, tmp_path / "stage1")
    assert not (tmp_path / "stage1").exists()

    li.save_index(tiny_index(tiny_model, tiny_sae, seed=1), sae_dir)  # this SAE's index, a newer build
    save_explanations(explanations_path(sae_dir), own, [])  # written for the older build
    with pytest.raises(CompatibilityError, match="not written for the latent index there.*explain_latents.py"):
        hub.stage_upload(sae_dir, "me/saes", None, tmp_path / "stage2")
    explanations_path(sae_dir).unlink()
    (sae_dir / constants.INDEX_STATS_FILENAME).unlink()  # a damaged index
    with pytest.raises(CompatibilityError, match="incomplete or damaged"):
        hub.stage_upload(sae_dir, "me/saes", None, tmp_path / "stage3")


def test_published_files_and_card_name_no_local_path_and_only_measured_figures(tmp_path, tiny_sae):
    # What SAELens wrote for the demo build before it went through sae_lib.published: the build's
    # temporary folder as model_name/output_path, and the last training window's L0 and dead count.
    folder = tmp_path / "sae"
    tiny_sae.save_model(str(folder))
    partial = str(tmp_path / "data" / "demo.partial-4242" / "model")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"].update(model_name=partial, dataset_path="./corpus", l0=189.7, num_dead_features=0)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    (folder / "runner_cfg.json").write_text(json.dumps({
        "model_name": partial, "output_path": str(folder), "checkpoint_path": str(tmp_path / "ckpt" / "abc"),
        "training_tokens": 600_064, "sae": {"d_in": 32, "metadata": {"l0": 189.7}},
    }))
    (folder / constants.EVALS_FILENAME).write_text(json.dumps({"summary": {
        "l0": 15.7, "dead_fraction": 0.1875, "d_sae": 96, "n_tokens": 30_000, "explained_variance": 0.99,
        "ce_loss_score": 1.05, "ce_loss_without_sae": 0.92, "ce_loss_with_sae": 0.9197, "ce_loss_with_ablation": 0.926,
        "ce_loss_score_meaningful": False, "ce_loss_score_note": "Zero-ablating the hook raises the loss by only 0.006 nats"}}))
    stage = tmp_path / "stage"
    target = hub.stage_upload(folder, "me/saes", None, stage)
    for path in stage.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md"):
            text = path.read_text()
            assert str(tmp_path) not in text and "partial-4242/" not in text and "./corpus" not in text, path
    meta = json.loads((target / "cfg.json").read_text())["metadata"]
    assert (meta["model_name"], meta["l0"], meta["num_dead_features"], meta["measured_on_tokens"]) == ("model", 15.7, 18, 30_000)
    runner = json.loads((target / "runner_cfg.json").read_text())
    assert runner["output_path"] is None and runner["checkpoint_path"] is None and runner["model_name"] == "model"
    assert runner["sae"]["metadata"]["l0"] == 15.7
    assert SAE.load_from_disk(str(target)).cfg.metadata.l0 == 15.7  # still SAELens's layout
    card = (stage / "README.md").read_text()
    assert "# jumprelu SAE on model `" in card and "189.7" not in card
    assert "| CE loss clean / with SAE / hook zero-ablated (nats) | 0.92 / 0.9197 / 0.926 |" in card
    assert "105.0% (not meaningful: see below)" in card and "only 0.006 nats" in card


def test_a_folder_without_evals_publishes_no_training_window_figures(tmp_path, tiny_sae):
    folder = tmp_path / "sae"
    tiny_sae.save_model(str(folder))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"].update(l0=189.7, num_dead_features=0)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    target = hub.stage_upload(folder, "me/saes", None, tmp_path / "stage")
    meta = json.loads((target / "cfg.json").read_text())["metadata"]
    assert "l0" not in meta and "num_dead_features" not in meta
