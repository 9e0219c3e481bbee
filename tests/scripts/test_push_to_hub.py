"""scripts/push_to_hub.py: dry run, missing token, not an SAE folder, token never printed."""


import pytest
from huggingface_hub import HfApi
from sae_lens import SAE
from tests.helpers import load_script

push_to_hub = load_script("push_to_hub")


@pytest.fixture
def sae_dir(tmp_path, tiny_sae):
    tiny_sae.save_model(str(tmp_path / "sae"))
    return tmp_path / "sae"


def test_dry_run_writes_a_loadable_folder(sae_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # a dry run needs no token
    assert push_to_hub.main(["--sae-dir", str(sae_dir), "--repo", "me/saes", "--sae-id", "l1", "--dry-run", str(tmp_path / "d")]) == 0
    assert "l1/sae_weights.safetensors" in capsys.readouterr().out
    assert SAE.load_from_disk(str(tmp_path / "d" / "l1")).cfg.d_sae == 96


def test_a_dry_run_into_a_file_or_an_sae_id_naming_the_repo_root_is_refused(sae_dir, tmp_path, capsys, monkeypatch):
    """Neither is an upload failure: a file where the staging folder goes, and an SAE id of "." (the
    SAE's files would land at the repo's root, beside or over other SAEs' READMEs)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    assert push_to_hub.main(["--sae-dir", str(sae_dir), "--repo", "me/saes", "--dry-run", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "is a file: give an empty or new folder" in err and "upload" not in err.split("stage")[0]
    for sae_id in (".", "a/./b", "a/../b"):
        assert push_to_hub.main(["--sae-dir", str(sae_dir), "--repo", "me/saes", "--sae-id", sae_id,
                                 "--dry-run", str(tmp_path / "d")]) == 2
        assert "is not a usable SAE id" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


def test_push_without_token(sae_dir, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert push_to_hub.main(["--sae-dir", str(sae_dir), "--repo", "me/saes"]) == 2
    assert "HF_TOKEN is not set" in capsys.readouterr().err


def test_push_of_a_folder_that_is_not_an_sae(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert push_to_hub.main(["--sae-dir", str(tmp_path), "--repo", "me/saes"]) == 2
    assert "is not an SAE folder" in capsys.readouterr().err


def test_token_never_printed_even_when_the_hub_fails(sae_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_123")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "file_exists", lambda self, *a, **kw: False)

    def fail(self, **kw):
        raise RuntimeError(f"401 Unauthorized for token {self.token}")

    monkeypatch.setattr(HfApi, "upload_folder", fail)
    assert push_to_hub.main(["--sae-dir", str(sae_dir), "--repo", "me/saes"]) == 1
    captured = capsys.readouterr()
    assert "upload to me/saes failed" in captured.err and "***" in captured.err
    assert "hf_secret_123" not in captured.out + captured.err


def test_dry_run_card_and_files_name_no_local_path(sae_dir, tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("HF_TOKEN", raising=False)
    partial = str(tmp_path / "data" / "demo.partial-77" / "model")  # what the demo build used to record
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    cfg["metadata"]["model_name"] = partial
    (sae_dir / "cfg.json").write_text(json.dumps(cfg))
    (sae_dir / "runner_cfg.json").write_text(json.dumps({"model_name": partial, "output_path": str(sae_dir)}))
    staged = tmp_path / "d"
    assert push_to_hub.main(["--sae-dir", str(sae_dir), "--repo", "me/saes", "--dry-run", str(staged)]) == 0
    texts = [p.read_text() for p in staged.rglob("*") if p.suffix in (".json", ".md")]
    assert len(texts) == 4 and not any(str(tmp_path) in t or "partial-77/" in t for t in texts)
    assert "# jumprelu SAE on model `" in (staged / "README.md").read_text()
