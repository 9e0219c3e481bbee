"""The guided demo: each planted topic of the demo corpus and the latent that stands for it.

For each topic, the latents are ranked by **selectivity**, their mean activation over that topic's
stories minus their largest mean over any other topic (a latent that fires on every topic is not
selective). Selectivity alone can pick a latent that *reads* the topic without *writing* it (the
first version of this guide steered the castle topic toward the sea), so among the few most
selective latents the guide takes the one whose decoder direction, through the logit lens, most
promotes the topic's own words over the other topics' words: the one that steers toward its topic.

Computed from the held-out stories (the index's corpus) with the model and SAE, and saved next to
the latent index, tied to it by the index's ``build_id``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sae_lib.demo.corpus import TOPICS, topic_words
from sae_lib.folders import atomic_write

N_CANDIDATES = 5
"""Most selective latents per topic among which the logit lens picks."""


@dataclass(frozen=True)
class TopicLatent:
    topic: str
    latent: int
    selectivity: float
    """Mean activation on the topic's stories minus the largest mean on another topic's."""
    mean_on_topic: float
    promotion: float
    """Mean logit-lens value of the topic's words minus that of the other topics' words (in std units)."""
    max_act: float
    """The latent's largest activation on the topic's stories (the unit steering multiplies)."""



@torch.no_grad()
def topic_means(model, sae, stories: Sequence[tuple[str, str]], batch_size: int = 32) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Per topic, every latent's mean activation over the topic's stories' tokens, and its max there.

    ``stories`` are (text, topic) pairs. Returns (topics, means (n_topics, d_sae), maxes (n_topics, d_sae)).
    Stories are right-padded into batches; padding positions are masked out (causal attention: the real
    tokens never see them).
    """
    from sae_lib.probe import encode_tokens

    topics = sorted({t for _, t in stories})
    d_sae = int(sae.cfg.d_sae)
    sums = torch.zeros(len(topics), d_sae, dtype=torch.float64)
    maxes = torch.zeros(len(topics), d_sae)
    n_tok = torch.zeros(len(topics), dtype=torch.float64)
    tok = model.tokenizer
    for i in range(0, len(stories), batch_size):
        chunk = stories[i : i + batch_size]
        enc = [tok(text, add_special_tokens=False)["input_ids"] for text, _ in chunk]
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(len(enc), width, dtype=torch.bool)
        for r, e in enumerate(enc):
            ids[r, : len(e)] = torch.tensor(e)
            mask[r, : len(e)] = True
        feats = encode_tokens(model, sae, ids).float().cpu()  # (batch, width, d_sae)
        feats = feats * mask[..., None]
        for r, (_, topic) in enumerate(chunk):
            t = topics.index(topic)
            sums[t] += feats[r].sum(0).double()
            n_tok[t] += int(mask[r].sum())
            maxes[t] = torch.maximum(maxes[t], feats[r].max(0).values)
    return topics, (sums / n_tok[:, None].clamp(min=1)).float(), maxes


def _word_token_ids(tokenizer, words: set[str]) -> list[int]:
    """First token of each word as it appears mid-sentence (with its leading space)."""
    return sorted({tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words})


@torch.no_grad()
def topic_promotion(model, sae, tokenizer, topics: Sequence[str]) -> torch.Tensor:
    """(n_topics, d_sae): mean standardised logit-lens value of each topic's words minus the other topics' words."""
    from sae_lib.latent_index import decoder_in_residual

    mapped = decoder_in_residual(model, sae)
    if mapped is None:
        return torch.zeros(len(topics), int(sae.cfg.d_sae))
    dirs = mapped[0]
    w = getattr(getattr(model, "ln_final", None), "w", None)
    if isinstance(w, torch.Tensor):
        dirs = dirs * w.detach().float().to(dirs.device)
    logits = (dirs @ model.W_U.detach().float().to(dirs.device)).cpu()  # (d_sae, vocab)
    logits = (logits - logits.mean(1, keepdim=True)) / logits.std(1, keepdim=True).clamp(min=1e-6)
    ids = {t: _word_token_ids(tokenizer, topic_words(t)) for t in topics}
    out = []
    for t in topics:
        own = logits[:, ids[t]].mean(1)
        others = logits[:, [i for u in topics if u != t for i in ids[u]]].mean(1)
        out.append(own - others)
    return torch.stack(out)


def build_guide(model, sae, stories: Sequence[tuple[str, str]], n_candidates: int = N_CANDIDATES) -> list[TopicLatent]:
    """The latent standing for each planted topic (see the module docstring for the rule)."""
    topics, means, maxes = topic_means(model, sae, stories)
    promotion = topic_promotion(model, sae, model.tokenizer, topics)
    guide = []
    for t, topic in enumerate(topics):
        others = torch.cat([means[:t], means[t + 1 :]]).max(0).values
        selectivity = means[t] - others  # (d_sae,)
        candidates = selectivity.topk(n_candidates).indices
        candidates = candidates[selectivity[candidates] > 0]
        if len(candidates) == 0:
            continue
        best = int(candidates[promotion[t, candidates].argmax()])
        guide.append(TopicLatent(topic, best, float(selectivity[best]), float(means[t, best]),
                                 float(promotion[t, best]), float(maxes[t, best])))  # fmt: skip
    return guide


def save_guide(guide: Sequence[TopicLatent], path: Path, build_id: str) -> None:
    """Write the guide as JSON atomically, tied to the index build ``build_id``."""
    text = json.dumps({"index_build_id": build_id, "topics": [dataclasses.asdict(g) for g in guide]}, indent=1)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def load_guide(path: Path, build_id: str) -> list[TopicLatent] | None:
    """The saved guide, or None when there is none, it is unreadable, or it belongs to another index build."""
    try:
        raw = json.loads(Path(path).read_text())
        if raw.get("index_build_id") != build_id:
            return None
        return [TopicLatent(**g) for g in raw["topics"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def known_topics() -> list[str]:
    return sorted(TOPICS)


STORY_PROMPTS = ("Max walked to the", "One day Ivy visited the", "Tom went to the")
"""Neutral openings (no topic word) for measuring what steering adds, chosen because the demo model's
unsteered stories from them spread over several topics (no topic above 15% of the words), so a topic
the steering writes stands out; openings like "Nina found the" give one topic every time."""
DEMO_PROMPT = STORY_PROMPTS[0]
"""A story opening the demo model continues well (the Steering page's default on the demo)."""


def is_demo(ws) -> bool:
    """Whether ``ws`` (a :class:`sae_lib.workspace.Workspace`) holds the embedded demo model and SAE."""
    from sae_lib import constants

    root = constants.demo_dir()
    try:
        return (Path(ws.model_source).resolve() == (root / constants.DEMO_MODEL_SUBDIR).resolve()
                and ws.sae_dir is not None and Path(ws.sae_dir).resolve() == (root / constants.DEMO_SAE_SUBDIR).resolve())
    except (OSError, TypeError):
        return False


def demo_guide(ws) -> list[TopicLatent] | None:
    """The guide shipped with the demo's index, or computed now from the demo's held-out stories; None off the demo."""
    from sae_lib import constants
    from sae_lib.demo.build import load_corpus_split

    if not is_demo(ws) or ws.index is None:
        return None
    path = Path(ws.sae_dir) / constants.DEMO_GUIDE_FILENAME
    guide = load_guide(path, ws.index.meta.build_id)
    if guide is None:
        from sae_lib.model_queue import queue_for

        stories = [(s["text"], s["topic"]) for s in load_corpus_split(constants.demo_dir(), "heldout")]
        # The shared model runs one caller at a time: a visitor's steering hooks must not reach this forward.
        with queue_for(ws.model).slot():
            guide = build_guide(ws.model, ws.sae, stories)
    return guide


def write_demo_guide(model, sae, sae_dir: Path, corpus_root: Path, build_id: str) -> list[TopicLatent]:
    """What the demo build calls after writing the index: compute the guide and save it next to the index."""
    from sae_lib import constants
    from sae_lib.demo.build import load_corpus_split

    stories = [(s["text"], s["topic"]) for s in load_corpus_split(corpus_root, "heldout")]
    guide = build_guide(model, sae, stories)
    save_guide(guide, Path(sae_dir) / constants.DEMO_GUIDE_FILENAME, build_id)
    return guide
