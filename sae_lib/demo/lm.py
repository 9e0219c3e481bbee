"""The embedded default's language model: a tiny ``Qwen3ForCausalLM`` trained on the demo corpus.

It is the real Qwen3 architecture from ``transformers`` (RMSNorm, q/k norm, grouped-query attention,
rotary, SwiGLU), saved as a Hugging Face folder, so the app loads it through exactly the code path
it uses for Qwen3-8B.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM


@dataclass(frozen=True)
class LMConfig:
    hidden_size: int = 128
    """Residual width (d_model)."""
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    """Fewer KV heads than query heads: grouped-query attention, as in Qwen3-8B (32 q / 8 kv)."""
    head_dim: int = 32
    intermediate_size: int = 384
    context: int = 128
    """Training sequence length (stories are packed, separated by the end-of-text token)."""
    batch_size: int = 16
    steps: int = 400
    lr: float = 3e-3
    seed: int = 0


@dataclass(frozen=True)
class LMResult:
    model: Qwen3ForCausalLM
    """The trained model (eval mode, CPU, float32)."""
    heldout_loss: float
    """Mean next-token cross-entropy on the held-out split, in nats."""
    unigram_entropy: float
    """Entropy of the training split's token distribution, in nats: a model that ignores context."""
    tokens_seen: int
    seconds: float


def qwen3_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int,
    num_hidden_layers: int,
    intermediate_size: int,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int | None = None,
    max_position_embeddings: int = 512,
) -> Qwen3Config:
    """A small ``Qwen3Config`` sized by the arguments, with ``tokenizer``'s vocabulary and special tokens.

    The one builder of tiny Qwen3 models: the demo LM and every test fixture that needs a Hugging
    Face Qwen3 folder use it, so they share the architecture the app loads for Qwen3-8B (untied
    embeddings, rotary base 10,000, grouped-query attention when ``num_key_value_heads`` is smaller).
    """
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim if head_dim is not None else hidden_size // num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def unigram_entropy(rows: torch.Tensor) -> float:
    counts = torch.tensor(list(Counter(rows.flatten().tolist()).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


@torch.no_grad()
def heldout_loss(model: Qwen3ForCausalLM, rows: torch.Tensor, batch_size: int = 64) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = rows[i : i + batch_size]
        total += float(model(input_ids=batch, labels=batch).loss) * len(batch)
        n += len(batch)
    return total / n


def train_lm(
    cfg: LMConfig,
    tokenizer: PreTrainedTokenizerFast,
    train_rows: torch.Tensor,
    heldout_rows: torch.Tensor,
    progress: Callable[[int, int, float], None] | None = None,
) -> LMResult:
    """Train a tiny Qwen3 on packed rows; ``progress(step, steps, loss)`` is called as it goes."""
    torch.manual_seed(cfg.seed)
    hf_cfg = qwen3_config(
        tokenizer,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        head_dim=cfg.head_dim,
    )
    model = Qwen3ForCausalLM(hf_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, cfg.steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, cfg.steps - warmup)
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(len(train_rows), (cfg.batch_size,), generator=gen)
        batch = train_rows[idx]  # (batch, context)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(step + 1, cfg.steps, loss.item())
    model.eval()
    return LMResult(
        model=model,
        heldout_loss=heldout_loss(model, heldout_rows),
        unigram_entropy=unigram_entropy(train_rows),
        tokens_seen=cfg.steps * cfg.batch_size * train_rows.shape[1],
        seconds=time.perf_counter() - start,
    )
