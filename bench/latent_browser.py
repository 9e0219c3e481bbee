"""Benchmark of the Latent browser's Overview at the flagship's width (65,536 latents); prints JSON.

The Overview's table has a row per latent, with two text columns (top logit tokens, the tokens the
latent peaks on) built by a Python loop over every latent; Streamlit reruns the page on every slider
move, checkbox and row click. This builds an index for a random 65,536-latent JumpReLU SAE on the
embedded demo model's hook, its thresholds calibrated to an L0 of 125 on the indexed tokens as
``bench/gpu.py``'s are (``sae_lib.random_models.calibrated_sae``; the demo's vocabulary and held-out
stories, so the text columns hold real token strings), then times, in the same run:

(a) ``table``: one filter of the table as each rerun did it before (the whole table built, then
    filtered: ``latent_table(index, ...)``) against now (the table built once per index,
    ``all_latents_table``, then filtered by an array mask: ``latent_table(index, ..., table=...)``);
(b) ``page_rerun``: the Overview page rerun (AppTest, a checkbox toggled) with the app's once-per-index
    table against the same page building the table on every rerun, as it did before;
(c) ``density_histogram_json_bytes``: the size of the density histogram's figure, every latent's value
    binned by the browser (before) against 50 bars binned here (now), sent on every rerun.

Each timing is the best of ``--repeats`` runs on this machine (2 CPU cores in CI's machine).
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from sae_lib import latent_index as li


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def page_rerun_s(model, sae, index, repeats: int, cached: bool) -> float:
    """Seconds of one Overview rerun (the "Hide dead" checkbox toggled), best of ``repeats``."""
    from streamlit.testing.v1 import AppTest

    import lab_ui
    from sae_lib.constants import REPO_ROOT
    from sae_lib.workspace import Workspace

    ws = Workspace(model=model, sae=sae, model_source="demo", sae_source="random", sae_dir=None, index=index)
    saved = lab_ui.get_workspace, lab_ui.all_latents
    lab_ui.get_workspace = lambda: ws
    if not cached:  # the page as it was: the whole table built on every rerun
        lab_ui.all_latents = lambda idx: li.all_latents_table(idx)
    try:
        at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=600)
        at.run()
        at.switch_page("app_pages/latent_browser.py")
        at.run()  # the first run builds what the app keeps once per index
        assert not at.exception, at.exception
        times = []
        for i in range(repeats):
            at.checkbox(key="lb_hide_dead").set_value(i % 2 == 0)
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
            assert not at.exception, at.exception
        return min(times)
    finally:
        lab_ui.get_workspace, lab_ui.all_latents = saved
        lab_ui._all_latents.clear()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-sae", type=int, default=65_536, help="latents of the random SAE (default: 65,536)")
    parser.add_argument("--tokens", type=int, default=4_096, help="demo tokens indexed (default: 4,096)")
    parser.add_argument("--l0", type=float, default=125.0,
                        help="latents firing per token, as the flagship run's calibrated SAE (default: 125)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing, the best is kept (default: 3)")
    parser.add_argument("--no-page", action="store_true", help="skip the AppTest page reruns")
    args = parser.parse_args(argv)

    from sae_lib.corpora import CorpusSource, corpus_tokens
    from sae_lib.model import load_model
    from sae_lib.random_models import calibrated_sae
    from sae_lib.sae import load_sae
    from sae_lib.workspace import demo_sources

    model_dir, sae_dir = demo_sources()
    model = load_model(model_dir, device="cpu", dtype="float32")
    hook = load_sae(sae_dir, device="cpu").sae.cfg.metadata.hook_name  # the demo SAE's hook
    tokens = corpus_tokens(CorpusSource("demo"), model.tokenizer, args.tokens, 128)
    sae = calibrated_sae(model, hook, args.d_sae, tokens, l0=args.l0)  # every latent fires on these tokens
    t0 = time.perf_counter()
    index = li.build_index(model, sae, tokens, li.IndexConfig())
    build_s = time.perf_counter() - t0

    band = (-6.0, 0.0)
    full = li.all_latents_table(index)
    before = li.latent_table(index, log10_density_range=band, hide_dead=True)
    now = li.latent_table(index, log10_density_range=band, hide_dead=True, table=full)
    pd.testing.assert_frame_equal(before, now)  # the same table, only sooner
    t_before = best(lambda: li.latent_table(index, log10_density_range=band, hide_dead=True), args.repeats)
    t_once = best(lambda: li.all_latents_table(index), 1)
    t_now = best(lambda: li.latent_table(index, log10_density_range=band, hide_dead=True, table=full), args.repeats)
    report = {
        "d_sae": index.d_sae,
        "tokens_indexed": index.meta.n_tokens,
        "alive_latents": int((~index.dead).sum()),
        "rows_shown": len(now),
        "index_build_s": round(build_s, 1),
        "table": {
            "before_s_per_rerun": round(t_before, 6),
            "now_s_per_rerun": round(t_now, 6),
            "now_once_per_index_s": round(t_once, 6),
            "before_over_now": round(t_before / t_now, 1),
        },
    }
    # The Overview's density histogram as the page sends it: every latent's log10 density for the browser
    # to bin (before), or the 50 bars binned here (now).
    import numpy as np
    import plotly.express as px
    import plotly.graph_objects as go

    ld, dh = li.log10_densities(index), li.density_histogram(index)
    sent_before = len(px.histogram(x=ld, nbins=50).to_json())
    sent_now = len(go.Figure(go.Bar(x=(dh.edges[:-1] + dh.edges[1:]) / 2, y=dh.counts, width=np.diff(dh.edges))).to_json())
    report["density_histogram_json_bytes"] = {"before": sent_before, "now": sent_now}
    if not args.no_page:
        p_before = page_rerun_s(model, sae, index, args.repeats, cached=False)
        p_now = page_rerun_s(model, sae, index, args.repeats, cached=True)
        report["page_rerun"] = {"before_s": round(p_before, 4), "now_s": round(p_now, 4),
                                "before_over_now": round(p_before / p_now, 1)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
