"""bench/latent_browser.py, shrunk: the Overview's table and page, before and after the once-per-index
table, on one index in one run; the JSON reports both (not how fast: never timed tests)."""

import json

import pytest

from bench import latent_browser

# Loads the demo model; ~20 s (an index, two AppTest pages): in `make test`, not in the fast tier.
pytestmark = [pytest.mark.slow, pytest.mark.demo]


def test_table_and_page_before_and_after_run_and_report(demo_paths, capsys):
    latent_browser.main(["--d-sae", "512", "--tokens", "512", "--repeats", "2"])
    report = json.loads(capsys.readouterr().out)
    assert (report["d_sae"], report["tokens_indexed"]) == (512, 512)
    # The random SAE fires: the table has rows to build (dead latents are hidden, as the page does).
    assert 0 < report["alive_latents"] == report["rows_shown"] <= 512
    for part, before, now in [("table", "before_s_per_rerun", "now_s_per_rerun"), ("page_rerun", "before_s", "now_s")]:
        b, n, ratio = (report[part][k] for k in (before, now, "before_over_now"))
        assert b > 0 and n > 0 and abs(ratio - b / n) <= 0.1 + 0.02 * ratio  # the ratio is of the unrounded times
    assert report["table"]["now_once_per_index_s"] > 0
    sent = report["density_histogram_json_bytes"]
    assert 0 < sent["now"] < sent["before"]  # 50 bars against 512 values
