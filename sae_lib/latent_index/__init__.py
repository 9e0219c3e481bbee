"""Latent index: every latent's statistics from one streaming pass, saved next to the SAE (package overview).

The write-up explores latents one at a time (``show_activation_histogram``: 100 batches per latent).
Here one pass over a corpus, through the model up to the SAE's hook and the SAE encoder, fills for
*all* latents at once: firing count / density, max and mean positive activation, a histogram of
positive activations, the top-k activating contexts (with per-token activations for highlighting),
a few randomly sampled firing contexts (typical, lower-range activations), and the logit lens. The
memory held during the pass is ``d_sae x (n_bins + (top_k + n_lower_examples) x window)``,
independent of how many tokens stream through.

Files (names in :mod:`sae_lib.constants`) live inside the SAE folder: per-latent tensors in
safetensors, contexts in a parquet table, and a JSON with the metadata that ties the index to the
SAE's weights (a sha256 of them, plus a tolerance fingerprint for lower-precision loads).

Choices worth knowing:

* **Contexts are per sequence**: a latent's top-k contexts are the k sequences (rows of the token
  tensor) with its largest activation, each shown as a window around that sequence's max, so the
  k contexts are k different passages rather than neighbouring tokens of one passage.
* **Histograms have per-latent power-of-two ranges**: latent i's ``n_bins`` uniform bins cover
  ``[0, 2**hist_exp[i])``, the smallest power of two above its max. When a larger value arrives the
  range doubles and adjacent bins merge pairwise, which is exact, so the counts equal a histogram
  of all positive activations computed after the fact on the final edges.
* **Lower-range examples are a uniform random sample of the latent's firings**, at most one per
  sequence, each shown as a window around that firing (random keys per firing, kept by top-k, seeded):
  activations are skewed, so these show typical firing rather than the extremes. (Each sampled
  sequence's max would be an upper quantile: the max of its several firings.)
* **Logit lens** is ``W_dec[i] @ W_U`` through the final norm's elementwise weight (and centering for
  LayerNorm); the norm's division by the residual's scale is left out because it is one positive
  scalar per position and does not change which tokens rank top or bottom. Models loaded with
  TransformerLens's ``fold_ln`` have that weight folded into ``W_U`` already.

Modules: :mod:`.model` (config, statistics, metadata), :mod:`.build` (the streaming pass),
:mod:`.logit_lens`, :mod:`.identity` (what ties an index to its SAE), :mod:`.store` (files) and
:mod:`.query` (what the Latent browser reads). The live probe is :mod:`sae_lib.probe`, token packing
:mod:`sae_lib.packing`, the context highlighting :func:`sae_lib.render.context_html`.
"""

from sae_lib.latent_index.build import ProgressFn, build_index
from sae_lib.latent_index.identity import check_index_matches_sae, sae_fingerprint, sae_hash
from sae_lib.latent_index.logit_lens import LogitLens, decoder_in_residual, logit_lens, vocab_strings
from sae_lib.latent_index.model import (
    FORMAT_VERSION,
    KIND_SAMPLE,
    KIND_TOP,
    Contexts,
    IndexConfig,
    IndexMeta,
    LatentIndex,
)
from sae_lib.latent_index.query import (
    ContextView,
    Histogram,
    all_latents_table,
    density_histogram,
    density_text,
    histogram_title,
    latent_contexts,
    latent_histogram,
    latent_mask,
    latent_table,
    log10_densities,
    logit_lens_table,
    parse_latent,
    sample_latents,
    sample_title,
    steering_query,
)
from sae_lib.latent_index.store import load_index, save_index

# Moved out of the index (one noun per module); re-exported so callers written against the single
# module keep working. New code imports them from their homes.
from sae_lib.packing import PackedTokens, pack_texts  # noqa: E402
from sae_lib.probe import Firing, encode_tokens, firing_latents, firing_table, hook_activations, what_fires  # noqa: E402

__all__ = [
    "FORMAT_VERSION", "KIND_SAMPLE", "KIND_TOP", "ContextView", "Contexts", "Firing", "Histogram",
    "IndexConfig", "IndexMeta", "LatentIndex", "LogitLens", "PackedTokens", "ProgressFn", "all_latents_table", "build_index",
    "check_index_matches_sae", "decoder_in_residual", "density_histogram", "density_text", "encode_tokens", "firing_latents", "firing_table",
    "histogram_title", "hook_activations", "latent_contexts", "latent_histogram", "latent_mask", "latent_table",
    "load_index", "log10_densities", "logit_lens", "logit_lens_table", "pack_texts", "parse_latent",
    "sae_fingerprint", "sae_hash", "sample_latents", "sample_title", "save_index", "steering_query", "vocab_strings",
    "what_fires",
]  # fmt: skip
