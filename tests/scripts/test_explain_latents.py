"""scripts/explain_latents.py: flags, bad input, and kill -9 midway then resume, on the demo pair (copied)."""

import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sae_lib.constants import EXPLANATIONS_FILENAME, REPO_ROOT
from sae_lib.explain.store import load_explanations
from tests.helpers import load_script, script_env

SCRIPT = REPO_ROOT / "scripts" / "explain_latents.py"


@pytest.fixture(scope="module")
def script():
    return load_script("explain_latents")


def test_help_explains_every_knob(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--preset", "--explainer", "--min_density", "--max_density", "--most_frequent", "--limit", "--chunk",
                 "--n_score", "--max_new_tokens"):  # fmt: skip
        assert flag in out
    assert script.parse_args(["--preset", "qwen3-8b"]).pair.model == "Qwen/Qwen3-8B"
    assert script.parse_args(["--preset", "qwen3-8b", "--device", "cpu"]).pair.device == "cpu"


def test_a_rerun_redoes_rows_of_an_older_method_or_another_explainer(script):
    # What "already explained" means on a rerun: the current method by the same explainer. An
    # explainer-v1 row (fewer excerpts, fewer scored) or another explainer's row is explained again.
    from sae_lib.explain.explainer import METHOD
    from sae_lib.explain.store import empty_table

    table = pd.concat([empty_table(), pd.DataFrame({
        "latent": [1, 2, 3, 4], "explanation": ["ships", "bread", "", "the moon"],
        "method": [METHOD, "explainer-v1", METHOD, METHOD], "explainer": ["demo", "demo", "demo", "Qwen/Qwen3-8B"],
    })], ignore_index=True)
    assert script.finished_latents(table, "demo") == {1, 3}
    assert script.finished_latents(table, "Qwen/Qwen3-8B") == {4}
    assert script.finished_latents(empty_table(), "demo") == set()
    # A lone latent's shuffled baseline is another latent's explanation, never an empty one.
    assert {script._other_explanation(table, latent) for latent in range(9)} == {"ships", "bread", "the moon"}
    assert script._other_explanation(table[table["latent"] == 3], 5) == ""  # nothing usable: no baseline text


def test_a_rerun_with_other_settings_redoes_a_quick_runs_rows(script, monkeypatch):
    """A quick run (--n_score 2 --max_new_tokens 8: two excerpts scored, answers cut at 8 tokens) recorded
    the same method as a default run, so the default run skipped its latents and kept those rows."""
    from sae_lib.explain import explainer as E
    from sae_lib.explain.store import empty_table

    def gen(prompts, max_new_tokens):
        return ["Explanation: words"] * len(prompts) if max_new_tokens > 4 else ["Yes"] * len(prompts)

    gen.name = "stand-in"
    monkeypatch.setattr(E, "latent_examples", lambda index, lat, cfg, acts_fn=None: E.LatentExamples(lat, [], [], []))
    quick = E.ExplainConfig(n_score=2, max_new_tokens=8)
    rows = E.explain_and_score(gen, None, [1, 2], quick) + E.explain_and_score(gen, None, [3, 4], E.ExplainConfig())
    table = pd.concat([empty_table(), pd.DataFrame([r.__dict__ for r in rows])], ignore_index=True)
    assert table["method"].tolist()[:2] == [f"{E.METHOD} (n_score=2, max_new_tokens=8)"] * 2
    assert script.finished_latents(table, "stand-in") == {3, 4}  # the default run redoes the quick rows
    assert script.finished_latents(table, "stand-in", quick) == {1, 2}  # the same quick run resumes


def test_bad_settings_are_refused(script, capsys):
    with pytest.raises(Exception, match="min_density <= max_density"):
        script.parse_args(["--min_density", "0.5", "--max_density", "0.1"])


def test_a_model_without_its_sae_is_refused_before_it_loads(script, capsys, monkeypatch):
    """--preset qwen3-8b names the model; without --sae the demo SAE would be paired with it, found
    wrong only after loading 16 GB of Qwen3-8B."""
    import sae_lib.model

    monkeypatch.setattr(sae_lib.model, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert script.main(["--preset", "qwen3-8b"]) == 1
    assert "--model Qwen/Qwen3-8B was given without --sae" in capsys.readouterr().err


@pytest.fixture
def sae_copy(demo_paths, tmp_path):
    """The demo SAE folder with its index, copied: the script writes next to the index, never into the shared demo."""
    dest = tmp_path / "sae"
    shutil.copytree(demo_paths.sae, dest)
    return dest


def test_unloadable_explainer_is_a_clear_message(script, demo_paths, sae_copy, tmp_path, capsys):
    code = script.main(["--model", str(demo_paths.model), "--sae", str(sae_copy), "--device", "cpu",
                        "--explainer", str(tmp_path / "missing-model")])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "could not be loaded" in err and "Traceback" not in err
    assert not (sae_copy / EXPLANATIONS_FILENAME).exists()


def _run(demo_paths, sae_copy, n: int) -> subprocess.Popen:
    env = script_env(REPO_ROOT, OMP_NUM_THREADS="1")
    args = [sys.executable, str(SCRIPT), "--model", str(demo_paths.model), "--sae", str(sae_copy), "--device", "cpu",
            "--most_frequent", str(n), "--chunk", "2", "--max_new_tokens", "8", "--n_score", "2",
            "--n_non_activating", "2"]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_midway_resumes_without_losing_work(demo_paths, demo_workspace, sae_copy):
    path = sae_copy / EXPLANATIONS_FILENAME
    build_id = demo_workspace.index.meta.build_id
    proc = _run(demo_paths, sae_copy, 12)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(load_explanations(path, build_id)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = load_explanations(path, build_id)  # the file is whole after a kill at any point
    assert 2 <= len(first) < 12
    proc = _run(demo_paths, sae_copy, 12)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"{len(first):,} latents already explained" in out and "latents/minute" in out
    final = load_explanations(path, build_id)
    want = demo_workspace.index.count.argsort(descending=True, stable=True)[:12].tolist()
    assert sorted(final["latent"].tolist()) == sorted(want)
    kept = final.set_index("latent").loc[first["latent"]]
    assert kept["created"].tolist() == first["created"].tolist()  # earlier rows were not redone
