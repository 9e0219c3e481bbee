"""The demo build: end to end on a tiny config, atomic and cached; and the real demo's quality."""

import json

import pytest
import torch
from sae_lens import SAE

from sae_lib import constants
from sae_lib.demo import build as build_mod
from sae_lib.demo.build import SMALL_DEMO, ensure_demo, is_built, load_corpus_split
from sae_lib.demo.corpus import TOPICS, topic_share
from sae_lib.errors import InputError
from tests.helpers import load_script


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "demo"
    logs: list[str] = []
    paths = ensure_demo(out, SMALL_DEMO, log=logs.append)
    return paths, logs


@pytest.mark.slow
def test_small_build_end_to_end(small_demo):
    paths, logs = small_demo
    assert is_built(paths.root, SMALL_DEMO)
    # the model folder is a Hugging Face folder with safetensors only
    names = {p.name for p in paths.model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    assert json.loads((paths.model / "config.json").read_text())["architectures"] == ["Qwen3ForCausalLM"]
    # the SAE folder loads with SAELens's own loader and sits on the configured hook
    sae = SAE.load_from_disk(str(paths.sae))
    assert sae.cfg.metadata.hook_name == SMALL_DEMO.hook_name
    assert (sae.cfg.d_in, sae.cfg.d_sae) == (SMALL_DEMO.lm.hidden_size, SMALL_DEMO.d_sae)
    assert (paths.sae / constants.INDEX_META_FILENAME).exists()
    # the index ships the labels' counts and the Home page's topic guide, tied to the index build
    from sae_lib.demo.guide import load_guide
    from sae_lib.latent_index import load_index

    index = load_index(paths.sae, sae)
    assert index.counts is not None
    assert index.meta.description == "demo corpus (held-out stories)"  # the Latent browser names the corpus
    guide = load_guide(paths.sae / constants.DEMO_GUIDE_FILENAME, index.meta.build_id)
    assert guide and {g.topic for g in guide} <= set(TOPICS) and all(0 <= g.latent < sae.cfg.d_sae for g in guide)
    # it ships its evals on the held-out stories, and its SAELens files name no local path
    evals = json.loads((paths.sae / constants.EVALS_FILENAME).read_text())["summary"]
    assert evals["n_tokens"] > 0 and "ce_loss_score_meaningful" in evals and "ce_loss_with_ablation" in evals
    for name in (constants.SAE_CFG_FILENAME, "runner_cfg.json"):
        text = (paths.sae / name).read_text()
        assert str(paths.root.parent) not in text and ".partial-" not in text, name
    meta = json.loads((paths.sae / constants.SAE_CFG_FILENAME).read_text())["metadata"]
    assert (meta["model_name"], meta["dataset_path"]) == ("latent-lab/demo", "latent-lab/demo-corpus")
    assert meta["l0"] == evals["l0"] and meta["num_dead_features"] == round(evals["dead_fraction"] * SMALL_DEMO.d_sae)
    # the corpus ships with its topic labels
    heldout = load_corpus_split(paths.root, "heldout")
    assert len(heldout) == SMALL_DEMO.n_heldout and {s["topic"] for s in heldout} <= set(TOPICS)
    # progress was reported, stage by stage
    text = "\n".join(logs)
    for stage in ("corpus", "tokenizer", "LM step", "held-out loss", "SAE", "latent index", "topic guide"):
        assert stage in text


@pytest.mark.slow
def test_second_run_reuses_the_build(small_demo):
    paths, _ = small_demo
    before = (paths.root / constants.DEMO_BUILD_MANIFEST).stat().st_mtime_ns
    logs: list[str] = []
    again = ensure_demo(paths.root, SMALL_DEMO, log=logs.append)
    assert logs == [] and again.root == paths.root
    assert (paths.root / constants.DEMO_BUILD_MANIFEST).stat().st_mtime_ns == before


@pytest.mark.slow
def test_interrupted_build_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "demo"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during SAE training

    monkeypatch.setattr("sae_lib.training.runner.run_training", killed)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo(out, SMALL_DEMO, log=lambda _: None)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "demo.lock"]


def test_leftovers_of_a_killed_build_are_discarded_not_reused(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    # A process killed with SIGKILL leaves its partial folder, even with a manifest-looking file.
    stale = tmp_path / "demo.partial-424242"
    (stale / "model").mkdir(parents=True)
    (stale / constants.DEMO_BUILD_MANIFEST).write_text(json.dumps({"config_digest": SMALL_DEMO.digest()}))
    calls = []
    monkeypatch.setattr(build_mod, "build_demo", lambda o, c, log: calls.append(o) or "built")
    assert ensure_demo(out, SMALL_DEMO, log=lambda _: None) == "built"
    assert calls == [out] and not stale.exists()


def test_a_folder_of_ones_own_is_never_built_over(tmp_path, capsys):
    """--out (or LATENT_LAB_DEMO_DIR) pointed at a folder holding other files: refused before any work,
    the files kept. A build replaces its folder whole."""
    script = load_script("build_demo")
    runs = tmp_path / "runs"
    (runs / "qwen3").mkdir(parents=True)
    (runs / "qwen3" / "sae_weights.safetensors").write_bytes(b"hours of training")
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    for out, message in ((runs, "holds files that are not the demo's (qwen3)"), (a_file, "is a file, not a folder")):
        assert script.main(["--out", str(out), "--small"]) == 2
        assert message in capsys.readouterr().err
    assert (runs / "qwen3" / "sae_weights.safetensors").read_bytes() == b"hours of training"
    assert a_file.read_text() == "mine"
    with pytest.raises(InputError, match="not the demo's"):
        ensure_demo(runs, SMALL_DEMO, log=lambda _: None)
    stale = tmp_path / "old-demo"  # a demo build of another config, or a damaged one: replaced
    (stale / constants.DEMO_MODEL_SUBDIR).mkdir(parents=True)
    (stale / constants.DEMO_BUILD_MANIFEST).write_text(json.dumps({"config_digest": "old"}))
    build_mod.check_replaceable(stale)


def test_stale_config_is_rebuilt(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / constants.DEMO_BUILD_MANIFEST).write_text(json.dumps({"config_digest": "old"}))
    assert not is_built(out, SMALL_DEMO)


# --- the real embedded demo -------------------------------------------------------------------


def test_demo_sae_ships_measured_evals_and_keeps_its_tuned_quality(demo_paths):
    evals = json.loads((demo_paths.sae / constants.EVALS_FILENAME).read_text())["summary"]
    # The tuned demo SAE (DemoConfig): L0 about 15 of 1024 latents, about 1% of variance unexplained.
    assert 10 < evals["l0"] < 25 and evals["explained_variance"] > 0.97, evals
    assert evals["n_tokens"] >= 25_000  # every full batch of the held-out stories
    meta = json.loads((demo_paths.sae / constants.SAE_CFG_FILENAME).read_text())["metadata"]
    assert meta["l0"] == evals["l0"] and meta["measured_on_tokens"] == evals["n_tokens"]
    # Zero-ablating blocks.2.hook_mlp_out barely moves the demo's loss: the ratio is flagged, not sold.
    gap = evals["ce_loss_with_ablation"] - evals["ce_loss_without_sae"]
    assert evals["ce_loss_score_meaningful"] is (gap >= 0.05)
    for name in (constants.SAE_CFG_FILENAME, "runner_cfg.json", constants.EVALS_FILENAME):
        text = (demo_paths.sae / name).read_text()
        assert str(demo_paths.root) not in text and ".partial-" not in text, name


def test_demo_lm_is_a_real_language_model(demo_paths):
    lm = demo_paths.manifest["lm"]
    # Far below what a model ignoring context could do.
    assert lm["heldout_loss"] < 0.5 * lm["unigram_entropy"], lm


@pytest.mark.parametrize("topic,opening", [
    ("ocean", "Anna went to the harbor."),
    ("space", "One day Ben visited the observatory."),
    ("cooking", "Maya walked to the spicy kitchen."),
    ("castle", "Tom went to the dungeon."),
])
def test_greedy_continuation_stays_on_topic(demo_workspace, topic, opening):
    model = demo_workspace.model
    with torch.no_grad():
        text = model.generate(opening, max_new_tokens=40, do_sample=False, verbose=False, prepend_bos=False)
    continuation = text[len(opening):]
    others = max(topic_share(continuation, t) for t in TOPICS if t != topic)
    assert topic_share(continuation, topic) > 0.15 and others == 0, continuation
