"""Latent indexes built in the app: corpora and their bad inputs, the shared job (one per SAE, cancel,
a full disk), and equality with scripts/build_latent_index.py on the same tokens."""

import errno
import io
import json
import shutil
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata

from sae_lib import corpora
from sae_lib import index_builds as ib
from sae_lib import latent_index as li
from sae_lib.latent_index import store
from sae_lib.errors import InputError, LatentLabError
from sae_lib.workspace import PairSource, load_workspace
from tests.helpers import load_script, make_hub_unreachable, populate_hf_cache, use_hf_cache

SMALL = ib.Settings(16, li.IndexConfig(n_bins=16, top_k=3, n_lower_examples=2, window=8, window_before=4, batch_size=4))


@pytest.fixture
def cache(monkeypatch, tmp_path):
    use_hf_cache(monkeypatch, tmp_path / "hub", offline=True)
    return tmp_path / "hub"


def _wait(build: ib.IndexBuild) -> ib.BuildStatus:
    assert build.finished.wait(120), "the build did not finish"
    return build.status()


# --- corpora --------------------------------------------------------------------------------------


def test_uploads_of_each_format_and_detected_columns():
    assert corpora.upload_texts("a.txt", b"First story.\n\nSecond\nstory.\n\n\n") == ["First story.", "Second\nstory."]
    jsonl = b'{"id": 1, "content": "one"}\n\n{"id": 2, "content": "two"}\n"three"\n'
    assert corpora.upload_texts("a.jsonl", jsonl) == ["one", "two", "three"]
    buf = io.BytesIO()
    pq.write_table(pa.table({"n": [1, 2], "body": ["alpha", "beta"]}), buf)
    assert corpora.upload_texts("a.parquet", buf.getvalue()) == ["alpha", "beta"]
    assert corpora.detect_text_column({"label": 0, "text": "x", "title": "y"}) == "text"


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.txt", b"", "is empty"),
        ("blank.txt", b"\n \n\n", "holds no text"),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("rows.jsonl", b'{"text": "ok"}\nnot json\n', "line 2: not JSON"),
        ("nums.jsonl", b'{"a": 1}\n', "No column holds text"),
        ("broken.parquet", b"PAR1 not really", "not a readable parquet"),
        ("model.bin", b"weights", "unsupported file type"),
    ],
)
def test_bad_uploads_are_refused_with_a_message(name, data, message):
    with pytest.raises(InputError, match=message):
        corpora.upload_texts(name, data)


def test_a_local_dataset_folder_reads_its_text_and_is_described_by_its_name(cache, tmp_path):
    """--dataset may be a local folder (datasets reads it): the index records its name, never its path
    (the description is published with the index), and a --text_column that is not text says so."""
    folder = tmp_path / "private" / "mycorpus"
    folder.mkdir(parents=True)
    rows = [{"id": 0, "text": None}, {"id": 1, "text": "The ship sailed."}, {"id": 2, "text": None},
            {"id": 3, "text": "The cat sat."}]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert list(corpora.hub_texts(str(folder))) == ["The ship sailed.", "The cat sat."]  # the missing text skipped
    source = corpora.CorpusSource("hub", name=str(folder))
    assert source.describe() == "mycorpus (train)"
    assert corpora.CorpusSource("hub", name="HuggingFaceFW/fineweb").describe() == "HuggingFaceFW/fineweb (train)"
    with pytest.raises(InputError, match="The column 'id' holds int values, not text; the text columns are text. Name"):
        list(corpora.hub_texts(str(folder), column="id"))


def test_unreachable_dataset_offers_the_demo_corpus_or_an_upload(monkeypatch, cache):
    make_hub_unreachable(monkeypatch)
    with pytest.raises(InputError, match=r"Could not open the dataset 'someone/corpus'.*demo corpus or upload"):
        list(corpora.hub_texts("someone/corpus"))


# --- the shared job ---------------------------------------------------------------------------------


class Gate:
    """Holds a build inside its first progress report until released: makes timing-dependent cases exact."""

    def __init__(self, monkeypatch):
        self.reached, self.release = threading.Event(), threading.Event()
        original = ib.IndexBuild.progress

        def progress(build, done, total, elapsed):
            original(build, done, total, elapsed)
            self.reached.set()
            assert self.release.wait(60)

        monkeypatch.setattr(ib.IndexBuild, "progress", progress)


def _entries(cache) -> list[str]:
    root = cache / ib.CACHE_SUBDIR
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.slow
def test_cancelled_build_leaves_nothing_and_a_rerun_starts_clean(monkeypatch, cache, tiny_model, tiny_sae):
    builds = ib.BuildRegistry()
    gate = Gate(monkeypatch)
    build, started = builds.start(tiny_model, tiny_sae, corpora.CorpusSource("demo"), 2048, SMALL)
    assert started and gate.reached.wait(60)
    assert build.status().state == "running" and 0 < build.status().tokens_done < build.status().tokens_total
    build.cancel()
    gate.release.set()
    status = _wait(build)
    assert status.state == "cancelled" and "nothing was written" in status.message
    assert _entries(cache) == [] and ib.load_cached(tiny_sae) is None

    monkeypatch.undo()  # no gate; the cache location is set again below
    use_hf_cache(monkeypatch, cache, offline=True)
    rerun, started = builds.start(tiny_model, tiny_sae, corpora.CorpusSource("demo"), 2048, SMALL)
    assert started and rerun is not build and _wait(rerun).state == "done"
    assert _entries(cache) == [ib.sae_key(tiny_sae)]
    loaded = ib.load_cached(tiny_sae)
    assert loaded is not None and loaded.meta.build_id == rerun.index.meta.build_id
    assert loaded.meta.n_tokens == 2048


def test_two_visitors_asking_at_once_start_one_build(monkeypatch, cache, tiny_model, tiny_sae):
    builds = ib.BuildRegistry()
    gate = Gate(monkeypatch)
    barrier = threading.Barrier(2)
    results = []

    def visitor():
        barrier.wait()
        results.append(builds.start(tiny_model, tiny_sae, corpora.CorpusSource("demo"), 1024, SMALL))

    threads = [threading.Thread(target=visitor) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results[0][0] is results[1][0]
    assert sorted(started for _, started in results) == [False, True]
    assert gate.reached.wait(60)
    assert [t.name for t in threading.enumerate()].count(f"latent-index-{ib.sae_key(tiny_sae)[:8]}") == 1
    gate.release.set()
    assert _wait(results[0][0]).state == "done"


def test_a_full_disk_is_a_clear_message_and_writes_nothing(monkeypatch, cache, tiny_model, tiny_sae):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "save_file", no_space)  # the first file of the index (safetensors)
    build, _ = ib.BuildRegistry().start(tiny_model, tiny_sae, corpora.CorpusSource("demo"), 1024, SMALL)
    status = _wait(build)
    assert status.state == "failed" and "disk is too full" in status.message and "Nothing was written" in status.message
    assert _entries(cache) == []


def test_a_read_only_index_cache_is_a_clear_message_before_the_pass(monkeypatch, cache, tiny_model, tiny_sae):
    """A Hub cache the app cannot write (read-only storage): the build stops at once with the message
    saying so (it ran the whole pass, then failed with 'The build failed: PermissionError ...')."""
    import pathlib

    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(cache)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    build, _ = ib.BuildRegistry().start(tiny_model, tiny_sae, corpora.CorpusSource("demo"), 1024, SMALL)
    status = _wait(build)
    assert status.state == "failed" and status.tokens_done == 0
    assert "Could not write the latent index into the index cache under HF_HUB_CACHE (Permission denied)" in status.message
    assert "Nothing was written" in status.message and str(cache) not in status.message
    with pytest.raises(LatentLabError, match="Permission denied"):  # and the write itself, when it gets there
        ib.write_atomic_folder(build.index or li.build_index(tiny_model, tiny_sae, torch.zeros((1, 16), dtype=torch.long), SMALL.index), cache / ib.CACHE_SUBDIR / "x")


def test_a_write_interrupted_by_a_restart_leaves_nothing_after_the_next_build(cache, tiny_model, tiny_sae):
    """A server stopped while it wrote an index (a Space restart, an OOM kill) leaves a ``.partial-*``
    folder as large as an index; the next write removes it (they piled up on the persistent storage),
    and keeps one a live process is writing."""
    import os
    import subprocess
    import sys

    final = ib.cache_dir(tiny_sae)
    final.parent.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = {pid: final.with_name(f".{final.name}.partial-{pid}-0000abcd") for pid in (gone.pid, os.getpid(), alive.pid)}
        for folder in leftovers.values():
            folder.mkdir()
            (folder / "latent_index.safetensors").write_bytes(b"x" * 1000)  # the first file written
        tokens = torch.randint(0, tiny_model.cfg.d_vocab, (4, 16), generator=torch.Generator().manual_seed(0))
        ib.write_atomic_folder(li.build_index(tiny_model, tiny_sae, tokens, SMALL.index), final)
        assert ib.load_cached(tiny_sae) is not None
        assert _entries(cache) == [leftovers[alive.pid].name, final.name]  # the stopped writers' are gone
    finally:
        alive.kill()
        alive.wait()


def test_a_failed_builds_message_names_no_server_path(monkeypatch, cache, tiny_model, tiny_sae, caplog):
    """Every visitor sees a build's message: an unexpected error quoting a file is cut to its name there,
    and the whole error goes to the operator's log."""
    def broken(*args, **kwargs):
        raise RuntimeError("cannot read /srv/hf-cache/datasets/secret/part-0.arrow")

    monkeypatch.setattr(store, "save_file", broken)
    build, _ = ib.BuildRegistry().start(tiny_model, tiny_sae, corpora.CorpusSource("demo"), 1024, SMALL)
    with caplog.at_level("ERROR", logger="sae_lib.index_builds"):
        status = _wait(build)
    assert status.state == "failed" and "part-0.arrow" in status.message and "/srv" not in status.message
    assert "/srv/hf-cache/datasets/secret/part-0.arrow" in caplog.text


def test_a_build_from_an_unreachable_dataset_fails_with_the_offer(monkeypatch, cache, tiny_model, tiny_sae):
    make_hub_unreachable(monkeypatch)
    build, _ = ib.BuildRegistry().start(tiny_model, tiny_sae, corpora.CorpusSource("hub", name="someone/corpus"), 1024, SMALL)
    status = _wait(build)
    assert status.state == "failed" and "demo corpus or upload" in status.message


def test_estimate_quotes_the_measurement_and_the_h100_rate(tiny_model, tiny_sae):
    rate = ib.measure_tokens_per_s(tiny_model, tiny_sae, SMALL)
    assert rate > 0
    text = ib.estimate_text(10_000_000, rate)
    assert f"{rate:,.0f} tokens/s" in text and "32,000 tokens/s" in text and "5 min" in text


# --- the app's path equals the script's --------------------------------------------------------------


@pytest.fixture
def script():
    return load_script("build_latent_index")


REGISTRY_SAE = "sae-lens:test-scope/layer1"


@pytest.fixture
def registry_pair(monkeypatch, tmp_path, tiny_hf_qwen3_dir):
    """A registry SAE (Qwen-Scope's layout, in a pre-filled Hub cache; only the network is mocked) for
    the tiny Qwen3 folder, as the scripts' --model/--sae/--device/--dtype flags give it."""
    from tests.registry_helpers import fake_scope_cache, use_registry

    use_registry(monkeypatch, fake_scope_cache(monkeypatch, tmp_path / "hub", 64, [1], model=str(tiny_hf_qwen3_dir)))
    return PairSource(model=str(tiny_hf_qwen3_dir), sae=REGISTRY_SAE, device="cpu", dtype="float32")


def _save_small_sae(folder):
    """A seeded 48-latent JumpReLU SAE on the tiny Qwen3's blocks.1.hook_mlp_out, saved in SAELens's layout."""
    torch.manual_seed(0)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=48, metadata=SAEMetadata(hook_name="blocks.1.hook_mlp_out")))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
        sae.threshold.fill_(0.02)
    sae.save_model(folder)
    return folder


@pytest.mark.slow
def test_index_built_in_the_app_equals_the_scripts(script, cache, tmp_path, tiny_hf_qwen3_dir):
    sae_dir = _save_small_sae(tmp_path / "sae")
    n_tokens, context = 2048, 64
    cfg = script.BuildIndexConfig(
        pair=PairSource(model=str(tiny_hf_qwen3_dir), sae=str(sae_dir), device="cpu", dtype="float32"),
        n_tokens=n_tokens, context_size=context, out=str(tmp_path / "script"),
    )
    script.run(cfg, log=lambda _: None)
    ws = load_workspace(str(tiny_hf_qwen3_dir), str(sae_dir), device="cpu", dtype="float32", fallback=False)
    build, _ = ib.BuildRegistry().start(ws.model, ws.sae, corpora.CorpusSource("demo"), n_tokens, ib.Settings(context, cfg.index))
    assert _wait(build).state == "done"
    app, scripted = li.load_index(ib.cache_dir(ws.sae), ws.sae), li.load_index(tmp_path / "script", ws.sae)
    assert app.meta.n_tokens == scripted.meta.n_tokens == n_tokens
    for name in store._STAT_FIELDS:
        torch.testing.assert_close(getattr(app, name), getattr(scripted, name), atol=0, rtol=0, msg=name)
    for kind in ("top", "samples"):
        for a, b in zip(getattr(app, kind), getattr(scripted, kind)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    same = {"build_id", "created", "description"}
    a_meta, s_meta = (json.loads(json.dumps({k: v for k, v in vars(m).items() if k not in same})) for m in (app.meta, scripted.meta))
    assert a_meta == s_meta


def test_script_writes_a_registry_saes_index_where_the_app_finds_it(script, registry_pair, tiny_hf_qwen3_dir):
    spec, pair = REGISTRY_SAE, registry_pair
    cfg = script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64)
    out = script.run(cfg, log=lambda _: None)
    assert out.parent == ib.cache_root()
    ws = load_workspace(str(tiny_hf_qwen3_dir), spec, device="cpu", dtype="float32", fallback=False)
    assert ws.index is not None and out == ib.cache_dir(ws.sae) and ws.index.meta.n_tokens == 1024


def test_script_writes_a_hub_saes_index_into_the_app_cache_not_the_hub_snapshot(script, cache, tmp_path, tiny_hf_qwen3_dir):
    """A Hub SAE's folder is a snapshot in the Hugging Face cache: the index goes to the app's cache
    (keyed by the weights), where the app and explain_latents.py read it; a local SAE's folder gets its own."""
    from sae_lib.sae import load_sae

    hook = "blocks.1.hook_mlp_out"
    snapshot = populate_hf_cache(cache, "user/saes", _save_small_sae(tmp_path / "sae"), subfolder=hook)
    spec = f"user/saes:{hook}"
    pair = PairSource(model=str(tiny_hf_qwen3_dir), sae=spec, device="cpu", dtype="float32")
    lines = []
    out = script.run(script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64), log=lines.append)
    loaded = load_sae(spec, device="cpu")
    assert out == ib.cache_dir(loaded.sae) == ib.index_home(loaded) == ib.index_location(loaded)
    assert sorted(p.name for p in (snapshot / hook).iterdir()) == ["cfg.json", "sae_weights.safetensors"]  # untouched
    assert any("Written to the app's index cache" in line for line in lines)
    ws = load_workspace(str(tiny_hf_qwen3_dir), spec, device="cpu", dtype="float32", fallback=False)
    assert ws.index_dir == out and ws.index.meta.n_tokens == 1024
    assert ws.index.meta.description == "demo corpus (held-out stories)"  # named as the app names it
    # A Hub SAE published with its index: read from its folder (as the app does); a rebuild still goes to
    # the cache and says which one the app reads.
    shutil.copytree(out, snapshot / hook, dirs_exist_ok=True)
    assert ib.index_location(loaded) == snapshot / hook and ib.index_home(loaded) == out
    lines.clear()
    script.run(script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64), log=lines.append)
    assert any("ships with a latent index of its own" in line for line in lines)
    # A local SAE: written into its folder, read from there; --out wins for both.
    local = load_sae(str(tmp_path / "sae"), device="cpu")
    assert ib.index_home(local) == tmp_path / "sae" and ib.index_location(local) == ib.cache_dir(local.sae)
    assert ib.index_home(local, tmp_path / "x") == ib.index_location(local, str(tmp_path / "x")) == tmp_path / "x"


def test_explanations_of_an_index_published_with_a_hub_sae_go_to_the_app_cache(script, cache, tmp_path, tiny_hf_qwen3_dir):
    """An index published with a Hub SAE sits in a snapshot inside the Hugging Face cache: explain_latents.py
    reads it there but writes its explanations into the app's cache (never into the snapshot), and the
    app shows them with that index."""
    import pandas as pd

    import lab_ui
    from sae_lib.explain.generator import FunctionGenerator
    from sae_lib.sae import load_sae

    hook = "blocks.1.hook_mlp_out"
    snapshot = populate_hf_cache(cache, "user/saes", _save_small_sae(tmp_path / "sae"), subfolder=hook)
    spec = f"user/saes:{hook}"
    pair = PairSource(model=str(tiny_hf_qwen3_dir), sae=spec, device="cpu", dtype="float32")
    built = script.run(script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64), log=lambda _: None)
    shutil.copytree(built, snapshot / hook, dirs_exist_ok=True)  # as if pushed with the SAE
    published = sorted(p.name for p in (snapshot / hook).iterdir())
    loaded = load_sae(spec, device="cpu")
    assert ib.index_location(loaded) == snapshot / hook
    home = ib.cache_root() / f"{ib.sae_key(loaded.sae)}.published"  # beside the app's own index folder, not in it
    assert ib.explanation_dirs(snapshot / hook, loaded.sae) == (home, snapshot / hook)
    assert ib.explanation_dirs(tmp_path / "sae", loaded.sae) == (tmp_path / "sae",)  # a local SAE: beside it

    def stand_in(prompts, max_new_tokens):
        return ["Yes" if "Explanation:" in messages[-1]["content"] else "Explanation: rockets" for messages in prompts]

    explain = load_script("explain_latents")
    path = explain.run(explain.ExplainLatentsConfig(pair=pair, limit=2, chunk=2), log=lambda _: None,
                       gen=FunctionGenerator(stand_in, "stand-in"))
    assert path.parent == home
    assert sorted(p.name for p in (snapshot / hook).iterdir()) == published  # the snapshot is untouched
    ws = load_workspace(str(tiny_hf_qwen3_dir), spec, device="cpu", dtype="float32", fallback=False)
    assert ws.index_dir == snapshot / hook
    descriptions, problem = lab_ui.get_descriptions(ws)
    latent = int(pd.read_parquet(path)["latent"].iloc[0])
    assert problem is None and descriptions.describe(latent).text == "rockets"
    # A rebuild of the app's own index for these weights leaves them alone (another folder).
    script.run(script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64), log=lambda _: None)
    assert path.exists()
    # Explanations for another build of the published index (an older revision's) do not shadow the ones
    # published with this one: the app reads the file written for the index it shows.
    from sae_lib.explain.store import save_explanations
    from sae_lib.explain.explainer import Explanation

    save_explanations(snapshot / hook / "latent_explanations.parquet", ws.index.meta.build_id,
                      [Explanation(latent, "published", "m", "e", 0.9, 0.9, 0.5, 0.5, "")])
    save_explanations(path, "an-older-build", [Explanation(latent, "stale", "m", "e", 0.9, 0.9, 0.5, 0.5, "")])
    lab_ui._descriptions.clear()
    descriptions, problem = lab_ui.get_descriptions(ws)
    assert problem is None and descriptions.describe(latent).text == "published"


def test_a_rebuilt_cache_index_keeps_the_old_explanations_aside(tiny_model, tiny_sae, cache):
    """The app's cache folder is replaced whole by a rebuild: explanations written for the old index
    (hours of explainer work) come along, set aside, instead of being deleted with it."""
    from sae_lib.explain.explainer import Explanation
    from sae_lib.explain.store import load_explanations, save_explanations

    tokens = li.pack_texts(["The ship sailed across the ocean."] * 20, tiny_model.tokenizer, 16).tokens
    folder = ib.cache_dir(tiny_sae)
    first = ib.write_atomic_folder(li.build_index(tiny_model, tiny_sae, tokens, SMALL.index), folder)
    old_build = li.load_index(first, tiny_sae).meta.build_id
    save_explanations(folder / "latent_explanations.parquet", old_build,
                      [Explanation(3, "kept", "m", "e", 0.9, 0.9, 0.5, 0.5, "")])
    ib.write_atomic_folder(li.build_index(tiny_model, tiny_sae, tokens, SMALL.index), folder)
    assert li.load_index(folder, tiny_sae).meta.build_id != old_build
    aside = [p for p in folder.iterdir() if p.name.startswith("latent_explanations.for-build-")]
    assert len(aside) == 1 and not (folder / "latent_explanations.parquet").exists()
    assert load_explanations(aside[0], old_build)["explanation"].tolist() == ["kept"]


def test_explain_script_finds_a_registry_saes_index_in_the_app_cache(script, registry_pair, tiny_hf_qwen3_dir):
    """A registry SAE has no folder: explain_latents.py without --out reads (and writes next to) the index
    that build_latent_index.py put in the app's cache, after the same checked load as the app's."""
    import pandas as pd

    from sae_lib.explain.generator import FunctionGenerator

    spec, pair = REGISTRY_SAE, registry_pair
    built = script.run(script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64), log=lambda _: None)
    explain = load_script("explain_latents")

    def stand_in(prompts, max_new_tokens):  # explains with one word, answers every scoring question Yes
        return ["Yes" if "Explanation:" in messages[-1]["content"] else "Explanation: rockets" for messages in prompts]

    cfg = explain.ExplainLatentsConfig(pair=pair, limit=2, chunk=2)
    path = explain.run(cfg, log=lambda _: None, gen=FunctionGenerator(stand_in, "stand-in"))
    assert path.parent == built
    table = pd.read_parquet(path)
    assert len(table) == 2 and set(table["explanation"]) == {"rockets"}
    # ... and the app, loading the same pair, reads the index and those explanations from there.
    import lab_ui

    ws = load_workspace(str(tiny_hf_qwen3_dir), spec, device="cpu", dtype="float32", fallback=False)
    assert ws.index_dir == built
    descriptions, problem = lab_ui.get_descriptions(ws)
    latent = int(table["latent"].iloc[0])
    assert problem is None and descriptions.describe(latent).text == "rockets"


def test_explain_script_gives_a_lone_last_latent_another_latents_explanation_as_baseline(script, registry_pair):
    """Three latents in chunks of two: the third is explained once (not its neighbour again), and its
    shuffled baseline is an explanation already written for another latent."""
    import pandas as pd

    from sae_lib.explain import prompts as P
    from sae_lib.explain.generator import FunctionGenerator

    pair = registry_pair
    script.run(script.BuildIndexConfig(pair=pair, n_tokens=1024, context_size=64), log=lambda _: None)
    explain = load_script("explain_latents")
    explained, baselines = [], []

    def stand_in(prompts, max_new_tokens):
        answers = []
        for messages in prompts:
            if messages[0]["content"] == P.EXPLAIN_SYSTEM:
                explained.append(1)
                answers.append(f"Explanation: topic{len(explained)}")
            else:
                baselines.append(messages[-1]["content"].split("\n")[0])
                answers.append("Yes")
        return answers

    cfg = explain.ExplainLatentsConfig(pair=pair, limit=3, chunk=2)
    table = pd.read_parquet(explain.run(cfg, log=lambda _: None, gen=FunctionGenerator(stand_in, "stand-in")))
    assert len(explained) == 3 and len(table) == 3
    assert set(table["explanation"]) == {"topic1", "topic2", "topic3"}
    assert any(b in ("Explanation: topic1", "Explanation: topic2") for b in baselines[-10:])
