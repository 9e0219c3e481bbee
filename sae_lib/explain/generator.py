"""The explainer LM: anything that answers a batch of chat prompts with text.

Two backends, both local, no network or API key:

* :class:`LoadedModelGenerator`: the model the app (or script) already has loaded, a
  TransformerLens ``HookedTransformer``; prompts go as left-padded greedy batches through the
  model's generation engine (:mod:`sae_lib.engine`, the Hugging Face module sharing its weights)
  when it has one, else through ``model.generate``, holding the model's queue slot
  (:mod:`sae_lib.model_queue`) like every generation.
* :class:`HFGenerator`: any Hugging Face causal LM, loaded from a local folder or the HF cache
  (safetensors only, never remote code), greedy, batched with left padding.

A prompt uses the tokenizer's chat template when it has one (Qwen3's with thinking switched off),
else :func:`~sae_lib.explain.prompts.render_plain`. A plain function ``(prompts, max_new_tokens) ->
answers`` is a generator too (the tests' scripted stand-in is one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from sae_lib.errors import LatentLabError
from sae_lib.explain.prompts import Message, render_plain
from sae_lib.published import public_name


class ExplainerLoadError(LatentLabError):
    """The explainer model could not be loaded (the statistical labels stay)."""


class TextGenerator(Protocol):
    name: str

    def __call__(self, prompts: Sequence[list[Message]], max_new_tokens: int) -> list[str]: ...


class FunctionGenerator:
    """Wraps ``fn(prompts, max_new_tokens) -> answers`` with a name."""

    def __init__(self, fn: Callable[[Sequence[list[Message]], int], list[str]], name: str):
        self.fn, self.name = fn, name

    def __call__(self, prompts: Sequence[list[Message]], max_new_tokens: int) -> list[str]:
        return list(self.fn(prompts, max_new_tokens))


def render(tokenizer: Any, messages: list[Message]) -> str:
    """The prompt text for ``tokenizer``'s model: its chat template when it has one, else plain text."""
    if getattr(tokenizer, "chat_template", None):
        try:
            # enable_thinking is read by Qwen3's template (no <think> block); other templates ignore it.
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
        except Exception:  # a template that rejects the system role, for instance: fall back to plain text
            pass
    return render_plain(messages)


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


class HFGenerator:
    """A Hugging Face causal LM as the explainer: greedy, batched, left-padded."""

    def __init__(self, source: str, device: str | None = None, dtype: str | None = None, batch_size: int = 16):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # The name goes into latent_explanations.parquet (pushed with the SAE, shown in the app): a local
        # folder is named, never its path.
        self.name, self.batch_size = public_name(source), batch_size
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False
            ).to(device).eval()
        except Exception as err:  # transformers raises OSError, ValueError, ... for a bad source
            raise ExplainerLoadError(
                f"The explainer model {source!r} could not be loaded ({type(err).__name__}: {str(err)[:300]}). "
                "Give a local Hugging Face folder or a model already in the Hugging Face cache, or leave the "
                "explainer unset to use the loaded model. The statistical labels are unaffected."
            ) from None
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, name: str, batch_size: int = 16) -> "HFGenerator":
        """Wrap a Hugging Face model and tokenizer already in memory (benchmarks, tests)."""
        self = cls.__new__(cls)
        self.name, self.batch_size, self.model, self.tokenizer = name, batch_size, model.eval(), tokenizer
        self.device = str(next(model.parameters()).device)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        return self

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[list[Message]], max_new_tokens: int) -> list[str]:
        out: list[str] = []
        for chunk in _batches(list(prompts), self.batch_size):
            texts = [render(self.tokenizer, m) for m in chunk]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            gen = self.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
            )  # fmt: skip
            new = gen[:, enc["input_ids"].shape[1] :]
            out += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return out


class LoadedModelGenerator:
    """The already loaded TransformerLens model as the explainer, through its queue slot.

    A prompt longer than the model's context (the demo's tiny LM has 128 tokens) keeps its last
    tokens, the question and the freshest excerpts; ``truncated`` counts such prompts so a caller can
    say so. Qwen3-8B's 40k-token context never needs it.

    When the model has a generation engine (:func:`sae_lib.engine.engine_for`), the batches run on its
    Hugging Face module with ``hf.generate(input_ids, attention_mask=..., do_sample=False)``: HF's
    attention kernels and KV cache, about three times TransformerLens's speed on the same weights, and
    explaining a chunk of latents is hundreds of prompts. Not :meth:`Engine.sample`: it takes no
    attention mask (its callers' prompts are one unpadded row or rows of equal length), so left-padded
    prompts of different lengths would attend to their padding and run from shifted positions; HF's
    ``generate`` masks the padding and derives each row's positions from the mask. Greedy either way,
    so the answers are the TransformerLens path's (tests/explain/test_generator_engine.py). A model
    without an engine keeps ``model.generate``.
    """

    def __init__(self, model: Any, name: str | None = None, batch_size: int = 16):
        if getattr(model, "tokenizer", None) is None:
            raise ExplainerLoadError("The loaded model has no tokenizer, so it cannot write explanations.")
        self.model, self.batch_size = model, batch_size
        self.name = public_name(name or str(model.cfg.model_name))  # as HFGenerator's: never a local path
        self.truncated = 0

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[list[Message]], max_new_tokens: int) -> list[str]:
        from sae_lib.engine import engine_for
        from sae_lib.limits import oom_guard
        from sae_lib.model_queue import queue_for

        tok = self.model.tokenizer
        n_ctx = int(self.model.cfg.n_ctx)
        max_new = max(1, min(max_new_tokens, n_ctx // 2))
        out: list[str] = []
        for chunk in _batches(list(prompts), self.batch_size):
            texts = [render(tok, m) for m in chunk]
            tokens = self.model.to_tokens(texts, prepend_bos=False, padding_side="left", truncate=False)  # (batch, pos)
            # Each prompt's own length, not a count of non-pad ids: a chat prompt can hold the pad token
            # (Qwen's <|endoftext|> is both), which would then be masked as padding.
            lengths = torch.tensor([self.model.to_tokens(t, prepend_bos=False, truncate=False).shape[1] for t in texts])
            if tokens.shape[1] + max_new > n_ctx:
                keep = n_ctx - max_new
                self.truncated += int((lengths > keep).sum())
                tokens = tokens[:, -keep:]  # left-padded: cutting on the left keeps every prompt's end
                lengths = lengths.clamp(max=keep)
            mask = torch.arange(tokens.shape[1])[None, :] >= tokens.shape[1] - lengths[:, None]  # (batch, pos)
            engine = engine_for(self.model)
            with queue_for(self.model).slot(), oom_guard("explaining"):
                if engine is not None:
                    gen = self._engine_generate(engine, tokens, mask, max_new)
                else:
                    gen = self.model.generate(
                        tokens, max_new_tokens=max_new, do_sample=False, stop_at_eos=True, prepend_bos=False,
                        padding_side="left", return_type="tokens", verbose=False,
                    )  # fmt: skip
            out += tok.batch_decode(gen[:, tokens.shape[1] :], skip_special_tokens=True)
        return out

    def _engine_generate(self, engine: Any, tokens: torch.Tensor, mask: torch.Tensor, max_new: int) -> torch.Tensor:
        """Greedy tokens (batch, pos + new) from the engine's HF module, finished rows padded with EOS as
        TransformerLens pads them (so both paths decode to the same text)."""
        eos = engine.eos_token_id if engine.eos_token_id is not None else self.model.tokenizer.eos_token_id
        pad = eos if eos is not None else self.model.tokenizer.pad_token_id
        return engine.hf.generate(
            input_ids=tokens.to(engine.device), attention_mask=mask.to(engine.device, torch.long),
            max_new_tokens=max_new, min_new_tokens=0, do_sample=False, num_beams=1, eos_token_id=eos,
            pad_token_id=pad, top_k=None, top_p=None, temperature=None,
        ).cpu()  # fmt: skip
