"""scripts/build_latent_index.py: presets and flags, and its build-and-save path on the tiny model."""


import pytest

from sae_lib import latent_index as li
from sae_lib.constants import INDEX_META_FILENAME
from sae_lib.packing import pack_texts
from tests.conftest import TINY_TEXTS
from tests.helpers import load_script



@pytest.fixture(scope="module")
def script():
    return load_script("build_latent_index")


def test_help_explains_every_knob(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--preset", "--model", "--sae", "--dataset", "--n_tokens", "--context_size", "--out", "--top_k", "--batch_size"):
        assert flag.replace("_", "-") in out or flag in out, flag
    assert "(default: 100000)" in out and "(default: demo)" in out


def test_presets_and_overrides(script):
    cfg = script.parse_args(["--preset", "qwen3-8b", "--sae", "u/r:layer_28", "--top_k", "7"])
    assert (cfg.pair.model, cfg.pair.sae, cfg.pair.dtype) == ("Qwen/Qwen3-8B", "u/r:layer_28", "bfloat16")
    assert cfg.index.top_k == 7 and cfg.index.skip_positions == 1  # the override keeps the preset's other fields
    assert script.parse_args([]) == script.PRESETS["demo"]


def test_bad_flag_values_exit_with_a_message(script, capsys):
    assert script.main(["--n_bins", "50"]) == 1
    assert "power of two" in capsys.readouterr().err
    assert script.main(["--dataset", "HuggingFaceFW/fineweb"]) == 1  # a Hub dataset needs the pair named
    assert "--model and --sae" in capsys.readouterr().err


def test_build_and_save_writes_a_loadable_index_and_logs_progress(script, tiny_model, tiny_sae, tmp_path):
    tokens = pack_texts(TINY_TEXTS, tiny_model.tokenizer, context_size=16, n_seq=20).tokens
    logs: list[str] = []
    cfg = li.IndexConfig(top_k=3, n_lower_examples=2, window=8, window_before=4, batch_size=8)
    built = script.build_and_save(tiny_model, tiny_sae, tokens, tmp_path, cfg, description="tiny", log=logs.append)
    assert (tmp_path / INDEX_META_FILENAME).exists()
    loaded = li.load_index(tmp_path, tiny_sae)
    assert loaded.meta.build_id == built.meta.build_id and loaded.meta.description == "tiny"
    assert any("tokens/s" in line for line in logs) and "320/320 tokens (100%)" in "\n".join(logs)


def test_an_unwritable_out_is_refused_before_anything_loads(script, tmp_path, capsys, monkeypatch):
    """The pass takes hours on Qwen3-8B: an --out it could not write into must stop it at the start,
    not in a traceback after the pass."""
    from sae_lib import workspace

    loads = []
    monkeypatch.setattr(workspace.PairSource, "load", lambda self: loads.append(1))
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    for out in (a_file, a_file / "sub", "/proc/no-such-folder"):
        assert script.main(["--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"Cannot write the latent index into {out}" in err and "Give a writable folder with --out." in err
    assert loads == [] and a_file.read_text() == "mine"
