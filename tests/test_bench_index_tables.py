"""bench/index_tables.py, shrunk: today's co-occurrence tables and the kept baseline run on one stream
and the JSON reports both (not how fast: never timed tests)."""

import json

import pytest

from bench import index_tables


def test_both_tables_run_on_the_same_stream_and_report(capsys):
    index_tables.main(["--d-sae", "4096", "--l0", "8", "--batches", "2"])  # 4,096^2 cells: the bounded tables
    report = json.loads(capsys.readouterr().out)
    assert (report["d_sae"], report["l0"], report["batches"], report["tokens_per_batch"]) == (4096, 8, 2, 4096)
    # Distinct (position, latent) entries: at most L0 per token, a few fewer where a draw repeats.
    assert 0.9 * 8 * 4096 < report["firing_entries_per_batch"] <= 8 * 4096
    for table in ("token_table_ms_per_batch", "cofire_table_ms_per_batch"):
        now, before, ratio = (report[table][k] for k in ("now", "before", "ratio"))
        assert now > 0 and before > 0 and abs(ratio - now / before) < 0.01 + 0.01 * ratio


def test_a_width_counted_exactly_is_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit, match="counted exactly"):
        index_tables.main(["--d-sae", "1024", "--batches", "1"])
