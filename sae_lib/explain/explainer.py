"""Explaining latents: excerpts from the index -> an explainer LM's one-line explanation -> its scores.

For each latent the index holds top contexts (ranked) and randomly sampled firing contexts. The
explainer sees every other top context plus a couple of sampled ones (the extremes and typical
firing, as delphi samples top and quantile examples); the rest are held out for scoring. Excerpts
where the latent is *not* active are other latents' stored contexts, checked with the model and SAE
(the latent must stay at 0 on every token) when an activation function is given. They are detection's
negatives and, with random tokens marked, fuzzing's wrongly marked excerpts (delphi's default fuzzing).

Everything is batched over a chunk of latents: one generator call writes all explanations, one
answers all scoring questions.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

from sae_lib.explain import prompts as P
from sae_lib.explain.generator import TextGenerator
from sae_lib.explain.scoring import balanced_accuracy

METHOD = "explainer-v4"
"""Recorded with every explanation: which prompts and example split produced it.

v2: fuzzing's wrong marks sit in non-activating excerpts (v1 put them on quiet tokens of activating
ones), 10 + 10 excerpts per score (v1: 5 + 5), no excerpt shown twice to the explainer.
v3: no held-out excerpt overlaps a shown one (same passage, overlapping window) or another held-out
one; more candidates for dense latents' negatives; a score needs both kinds of excerpt (else NaN);
line breaks and literal << >> in the text can no longer pass for the prompt's own marks or lines.
v4: detection's excerpts are escaped as the marked ones are (a corpus's <|endoftext|> or <|im_end|> was read
back by the explainer's tokenizer as that special token)."""

ActsFn = Callable[[torch.Tensor, int], torch.Tensor]
"""``(windows (n, window) token ids, latent) -> (n, window)`` activations of that latent, read afresh."""


@dataclass(frozen=True)
class ExplainConfig:
    """How many excerpts the explainer sees and is scored on, and how they are marked."""

    n_explain_top: int = 10
    """Top contexts shown to the explainer (ranks 0, 2, 4, ...: the odd ranks are held out)."""
    n_explain_samples: int = 2
    """Randomly sampled (typical) firing contexts shown to the explainer; the rest are held out."""
    n_score: int = 10
    """Held-out activating excerpts per score (detection and fuzzing each). With 5, one answer moved a
    balanced accuracy by 0.1, so a single odd excerpt decided whether a latent passed 0.8."""
    n_non_activating: int = 10
    """Non-activating excerpts: detection's negatives, and fuzzing's wrongly marked excerpts."""
    mark_fraction: float = 0.3
    """A token is marked when its activation is at least this share of the excerpt's max."""
    max_new_tokens: int = 40
    """Tokens the explainer may write for an explanation (a Yes/No answer gets 4)."""
    seed: int = 0
    """Seeds which excerpts are picked and which tokens fuzzing marks wrongly."""


def method_name(cfg: ExplainConfig) -> str:
    """What ``method`` records for rows written with ``cfg``: :data:`METHOD`, plus every setting that differs
    from :class:`ExplainConfig`'s defaults (``explainer-v4 (n_score=2, max_new_tokens=8)``), so that rows of
    a quick run (fewer excerpts scored, answers cut short) are not taken for a default run's."""
    changed = [f"{f.name}={getattr(cfg, f.name)}" for f in fields(cfg) if getattr(cfg, f.name) != f.default]
    return f"{METHOD} ({', '.join(changed)})" if changed else METHOD


class Excerpt(NamedTuple):
    ids: list[int]
    """Token ids of the window."""
    tokens: list[str]
    acts: list[float]
    """The latent's activation on each token, as the index recorded it (0 for non-activating excerpts)."""
    row: int = -1
    """The indexed passage (row) the window comes from; -1 when unknown."""
    start: int = 0
    """The window's first position in that row."""

    def overlaps(self, other: "Excerpt") -> bool:
        """Same passage and overlapping windows: text one excerpt shows, the other would too."""
        return (self.row >= 0 and self.row == other.row
                and self.start < other.start + len(other.ids) and other.start < self.start + len(self.ids))


class LatentExamples(NamedTuple):
    latent: int
    explain: list[Excerpt]
    """Shown to the explainer."""
    held_out: list[Excerpt]
    """Activating excerpts for scoring."""
    non_activating: list[Excerpt]
    """Excerpts where the latent stays at 0."""


@dataclass(frozen=True)
class Explanation:
    """One row of ``latent_explanations.parquet``."""

    latent: int
    explanation: str
    """One line; "" when the explainer gave no usable answer (the statistical label stays)."""
    method: str
    explainer: str
    """Which model wrote and judged it."""
    detection: float
    fuzzing: float
    detection_shuffled: float
    """The same detection questions with another latent's explanation: the baseline."""
    fuzzing_shuffled: float
    created: str


def _excerpts(index, latent: int, kind: str) -> list[Excerpt]:
    ctx = index.top if kind == "top" else index.samples
    out = []
    for s in range(ctx.value.shape[1]):
        if int(ctx.row[latent, s]) < 0:
            continue
        ids = [int(t) for t in ctx.tokens[latent, s] if t >= 0]
        out.append(Excerpt(ids, [index.token_str(t) for t in ids], ctx.acts[latent, s, : len(ids)].tolist(),
                           int(ctx.row[latent, s]), int(ctx.start[latent, s])))
    return out


NEGATIVE_ROUNDS = 6
"""Rounds of ``4n + 8`` candidate windows tried for ``n`` negatives: a dense latent fires somewhere in
most windows: on the demo's 30 densest latents one round left 14 with none, six rounds 11 (still
bounded work)."""


def _non_activating(index, latent: int, n: int, rng: random.Random, acts_fn: ActsFn | None) -> list[Excerpt]:
    """Other latents' top contexts on which ``latent`` stays at 0 (checked by ``acts_fn`` when given),
    distinct windows, drawn in rounds until ``n`` are found or :data:`NEGATIVE_ROUNDS` rounds are tried."""
    alive = (~index.dead).nonzero().squeeze(1).tolist()
    others = [i for i in alive if i != latent]
    rng.shuffle(others)
    rows = set(index.top.row[latent].tolist()) | set(index.samples.row[latent].tolist())
    per_round = 4 * n + 8
    out: list[Excerpt] = []
    seen: set[tuple[int, ...]] = set()
    for r in range(NEGATIVE_ROUNDS):
        picked: list[torch.Tensor] = []
        for other in others[r * per_round : (r + 1) * per_round]:
            slot = rng.randrange(int((index.top.row[other] >= 0).sum()) or 1)
            if int(index.top.row[other, slot]) < 0 or int(index.top.row[other, slot]) in rows:
                continue  # a passage where this latent has its own contexts is not a negative
            key = tuple(int(t) for t in index.top.tokens[other, slot])
            if key not in seen:  # two latents can share a top window: ask it once
                seen.add(key)
                picked.append(index.top.tokens[other, slot])
        if picked:
            windows = torch.stack(picked)  # (m, window), -1 padded
            if acts_fn is not None:
                acts = acts_fn(windows.clamp(min=0), latent)  # (m, window)
                windows = windows[(acts.masked_fill(windows < 0, 0) <= 0).all(dim=1)]
            for w in windows[: n - len(out)]:
                ids = [int(t) for t in w if t >= 0]
                out.append(Excerpt(ids, [index.token_str(t) for t in ids], [0.0] * len(ids)))
        if len(out) >= n or (r + 1) * per_round >= len(others):
            break
    return out


def latent_examples(index, latent: int, cfg: ExplainConfig, acts_fn: ActsFn | None = None) -> LatentExamples:
    """The excerpts for explaining and scoring ``latent``, deterministic from ``cfg.seed`` and the latent."""
    rng = random.Random(f"{cfg.seed}-{latent}")
    top, samples = _excerpts(index, latent, "top"), _excerpts(index, latent, "sample")
    explain: list[Excerpt] = []
    for e in top[0::2][: cfg.n_explain_top] + samples[: cfg.n_explain_samples]:
        # A sampled context can be a top one, or overlap it: showing it twice would weigh it double.
        if not any(e.ids == s.ids or e.overlaps(s) for s in explain):
            explain.append(e)
    # Nothing the explainer saw is held out, not even in part: top and sampled contexts are windows of the
    # same passages at different positions, and a held-out window sharing text with a shown one leaks it.
    # Nor is anything held out twice.
    held: list[Excerpt] = []
    for e in top[1::2] + samples[cfg.n_explain_samples :]:
        if not any(e.ids == s.ids or e.overlaps(s) for s in explain + held):
            held.append(e)
    rng.shuffle(held)
    return LatentExamples(latent, explain, held[: cfg.n_score], _non_activating(index, latent, cfg.n_non_activating, rng, acts_fn))


def _marked(ex: Excerpt, frac: float) -> str:
    peak = max(ex.acts) if ex.acts else 0.0
    return P.mark(ex.tokens, ex.acts, threshold=frac * peak - 1e-12 if peak > 0 else math.inf)


def _n_marked(ex: Excerpt, frac: float) -> int:
    peak = max(ex.acts) if ex.acts else 0.0
    return sum(a >= frac * peak and a > 0 for a in ex.acts)


def _fuzzed(ex: Excerpt, n: int, rng: random.Random) -> str | None:
    """A non-activating excerpt with ``n`` random tokens marked (delphi's default fuzzing); None if too short."""
    if n == 0 or len(ex.tokens) < n:
        return None
    chosen = set(rng.sample(range(len(ex.tokens)), n))
    return P.mark(ex.tokens, [1.0 if i in chosen else 0.0 for i in range(len(ex.tokens))])


class _Questions(NamedTuple):
    messages: list[list[P.Message]]
    truth: list[bool]
    key: list[tuple[int, str]]
    """(latent position in the chunk, score name) per question."""


def _questions(examples: Sequence[LatentExamples], texts: Sequence[str], shuffled: Sequence[str], cfg: ExplainConfig) -> _Questions:
    q = _Questions([], [], [])
    for j, (ex, text, other) in enumerate(zip(examples, texts, shuffled)):
        rng = random.Random(f"{cfg.seed}-fuzz-{ex.latent}")
        fuzz = [(_marked(e, cfg.mark_fraction), True) for e in ex.held_out]
        # As many wrong marks as the held-out excerpts have right ones, on average, rounded up (tokens at or
        # above the marking threshold; delphi counts every active token instead).
        n_wrong = math.ceil(sum(_n_marked(e, cfg.mark_fraction) for e in ex.held_out) / max(1, len(ex.held_out)))
        fuzz += [(f, False) for f in (_fuzzed(e, n_wrong, rng) for e in ex.non_activating) if f is not None]
        detect = [(P.plain(e.tokens), True) for e in ex.held_out]
        detect += [(P.plain(e.tokens), False) for e in ex.non_activating]
        for name, explanation in (("", text), ("_shuffled", other)):
            if not explanation:
                continue
            for excerpt, truth in detect:
                q.messages.append(P.detection_messages(explanation, excerpt))
                q.truth.append(truth)
                q.key.append((j, "detection" + name))
            for excerpt, truth in fuzz:
                q.messages.append(P.fuzz_messages(explanation, excerpt))
                q.truth.append(truth)
                q.key.append((j, "fuzzing" + name))
    return q


def score_explanations(
    gen: TextGenerator,
    examples: Sequence[LatentExamples],
    texts: Sequence[str],
    shuffled: Sequence[str],
    cfg: ExplainConfig = ExplainConfig(),
) -> list[dict[str, float]]:
    """Per latent: detection, fuzzing and their shuffled baselines (NaN where nothing could be asked)."""
    q = _questions(examples, texts, shuffled, cfg)
    answers = [P.parse_yes_no(a) for a in gen(q.messages, 4)] if q.messages else []
    names = ("detection", "fuzzing", "detection_shuffled", "fuzzing_shuffled")
    scores = []
    for j in range(len(examples)):
        row = {}
        for name in names:
            picked = [(t, a) for (jj, n), t, a in zip(q.key, q.truth, answers) if jj == j and n == name]
            row[name] = balanced_accuracy([t for t, _ in picked], [a for _, a in picked])
        scores.append(row)
    return scores


def explain_and_score(
    gen: TextGenerator,
    index,
    latents: Sequence[int],
    cfg: ExplainConfig = ExplainConfig(),
    acts_fn: ActsFn | None = None,
    fallback_shuffled: Callable[[int], str] | None = None,
) -> list[Explanation]:
    """Explain ``latents`` (one batch of prompts) and score each against another latent's explanation.

    The shuffled explanation of latent ``j`` in the chunk is latent ``j + 1``'s (cyclically); a chunk of
    one latent takes ``fallback_shuffled(latent)`` (e.g. a random other latent's label) instead.
    """
    examples = [latent_examples(index, lat, cfg, acts_fn) for lat in latents]
    answers = gen([P.explain_messages([_marked(e, cfg.mark_fraction) for e in ex.explain]) for ex in examples], cfg.max_new_tokens)
    texts = [P.parse_explanation(a) for a in answers]
    # Latent j's baseline: the next latent's explanation in the chunk (cyclically) that is not empty (an
    # explainer can fail on one), else the fallback.
    shuffled = []
    for j, lat in enumerate(latents):
        others = [texts[(j + k) % len(texts)] for k in range(1, len(texts))]
        shuffled.append(next((t for t in others if t), "") or (fallback_shuffled(lat) if fallback_shuffled else ""))
    scores = score_explanations(gen, examples, texts, shuffled, cfg)
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return [
        Explanation(int(lat), text, method_name(cfg), gen.name, s["detection"], s["fuzzing"], s["detection_shuffled"],
                    s["fuzzing_shuffled"], created)
        for lat, text, s in zip(latents, texts, scores)
    ]  # fmt: skip


def model_acts_fn(model, sae) -> ActsFn:
    """An :data:`ActsFn` reading activations with ``model`` + ``sae`` (holding the model's queue slot)."""
    from sae_lib.probe import encode_tokens
    from sae_lib.model_queue import queue_for

    def acts(windows: torch.Tensor, latent: int) -> torch.Tensor:
        with queue_for(model).slot():
            feats = encode_tokens(model, sae, windows)  # (n, window, d_sae)
        return feats[..., latent].float().cpu()

    return acts
