"""Steering a model with SAE latents: specs, vectors and scoped hooks.

Three ways to push a latent (``SteeringSpec.method``), all applied at the hook the SAE writes (its
``hook_name``, or a transcoder's output hook ``hook_name_out``: see :mod:`sae_lib.sae_hooks`):

``write-up clamp``
    Exactly the write-up's hook: ``act + clamp(W_dec[i] * max_act * hi, min=W_dec[i] * max_act * lo)``.
    ``clamp`` acts per element, so with ``hi > lo > 0`` the positive components of ``W_dec[i]`` are
    scaled by ``hi`` and the negative ones by ``lo``: the added vector is not parallel to ``W_dec[i]``
    unless ``hi == lo``.
``add``
    ``act + coeff * max_act * W_dec[i]`` (the ARENA / Neuronpedia form).
``clamp activation``
    Encode ``act`` with the SAE, set latent ``i`` to ``coeff * max_act``, and add the change of the
    reconstruction, ``decode(z') - decode(z)``: the SAE's error term is kept ("Golden Gate" style).

Hooks only live for one generation (a context manager that removes them in ``finally``); seeded
batched generation with them is :mod:`sae_lib.generation`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from sae_lib import sae_hooks
from sae_lib.errors import CompatibilityError, InputError, quoted
from sae_lib.limits import LIMITS, Limits, check_range

Method = Literal["write-up clamp", "add", "clamp activation"]
METHODS: tuple[str, ...] = get_args(Method)
Positions = Literal["all", "generated"]
POSITIONS: tuple[str, ...] = get_args(Positions)

WRITEUP_PROMPT = "What are you? When you look in the mirror, what do you see?"
"""The write-up's prompt, the page's default."""

METHOD_HELP = {
    "write-up clamp": (
        "The write-up's hook: adds clamp(W_dec[i]·max_act·hi, min=W_dec[i]·max_act·lo). The clamp acts per "
        "element, so (for hi > lo > 0) positive components of the decoder direction are scaled by hi and "
        "negative ones by lo: the added vector is not parallel to the latent's direction unless hi = lo."
    ),
    "add": "Adds coeff·max_act·W_dec[i] (the ARENA / Neuronpedia form): a push along the latent's direction.",
    "clamp activation": (
        "Encodes the activation with the SAE, sets the latent to coeff·max_act and adds the change of the "
        "reconstruction, so the SAE's error term is kept (\"Golden Gate\" style). coeff 0 ablates the latent."
    ),
}
POSITIONS_HELP = (
    "all: every position, prompt included (the write-up). generated: only the positions that produce new "
    "tokens, i.e. the prompt's last token and every generated one; the model reads the prompt unsteered."
)


# --- what to steer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringSpec:
    """One latent to steer, how, and how hard."""

    latent: int
    """Index of the SAE latent (0 <= latent < d_sae)."""
    method: Method = "write-up clamp"
    """One of ``METHODS`` (see the module docstring)."""
    max_act: float = 1.0
    """The latent's largest activation seen on text: the unit every multiplier is measured in."""
    hi: float = 10.0
    """``write-up clamp``: multiple of ``max_act`` for the positive components of ``W_dec[latent]``."""
    lo: float = 5.0
    """``write-up clamp``: multiple of ``max_act`` for the negative components (the clamp's minimum)."""
    coeff: float = 10.0
    """``add``: coefficient of ``max_act * W_dec[latent]``; ``clamp activation``: target activation in units
    of ``max_act``."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"Unknown steering method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if not math.isfinite(self.max_act) or self.max_act <= 0:
            raise InputError(
                f"Latent {self.latent}: max activation must be a positive number, got {self.max_act:g}. "
                "A latent that never fires has max activation 0: type a scale to steer it anyway (1.0 is a start)."
            )
        if self.max_act > LIMITS.max_latent_activation:
            raise InputError(
                f"Latent {self.latent}: max activation {self.max_act:g} is above this server's limit of "
                f"{LIMITS.max_latent_activation:,g}. Real latents peak in the tens to hundreds: type the value "
                "the Latent browser shows for this latent."
            )

    def multipliers(self) -> tuple[float, ...]:
        """The knobs this method uses (what the sliders move)."""
        return (self.hi, self.lo) if self.method == "write-up clamp" else (self.coeff,)

    def scaled(self, scale: float) -> "SteeringSpec":
        """The same spec with every multiplier multiplied by ``scale``."""
        return SteeringSpec(
            self.latent, self.method, self.max_act, self.hi * scale, self.lo * scale, self.coeff * scale
        )


def check_specs(specs: Sequence[SteeringSpec], d_sae: int, limits: Limits = LIMITS) -> None:
    """Raise :class:`InputError` unless every spec fits this SAE and the bounds in ``limits``."""
    if len(specs) > limits.max_steered_latents:
        raise InputError(
            f"{len(specs)} latents selected; at most {limits.max_steered_latents} can be steered at once. Remove some."
        )
    for spec in specs:
        if not (0 <= spec.latent < d_sae):
            raise InputError(f"Latent {spec.latent} does not exist: this SAE has latents 0 to {d_sae - 1}.")
        for name, value in zip(("hi", "lo") if spec.method == "write-up clamp" else ("coeff",), spec.multipliers()):
            check_range(f"Latent {spec.latent}: {name}", value, -limits.max_multiplier, limits.max_multiplier)


def parse_latents(text: str, d_sae: int, limit: int | None = None) -> list[int]:
    """Latent numbers typed as ``"12, 40 7"``: unique, in order, each checked against ``d_sae``.

    More than ``limit`` (default: this server's ``max_steered_latents``) is refused as soon as it is
    seen, before anything is built for them.
    """
    limit = LIMITS.max_steered_latents if limit is None else limit
    parts = [p for p in re.split(r"[\s,;]+", text.strip()) if p]
    out: list[int] = []
    for part in parts:
        try:
            latent = int(part)
        except ValueError:
            raise InputError(f"{quoted(part)} is not a latent number; type whole numbers such as 12, 40.") from None
        if not (0 <= latent < d_sae):
            raise InputError(f"Latent {latent} does not exist: this SAE has latents 0 to {d_sae - 1}.")
        if latent not in out:
            out.append(latent)
        if len(out) > limit:
            raise InputError(
                f"More than {limit} latents given ({len(parts):,} numbers in the list); at most {limit} can be "
                "steered at once. Remove some."
            )
    return out


def steering_vector(sae: SAE, spec: SteeringSpec) -> Tensor:
    """The vector an additive spec adds at each steered position. Shape ``(d_in,)``, SAE dtype."""
    w = sae.W_dec[spec.latent].detach()  # (d_in,)
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):  # (Batch)TopK: decode writes z_i * W_dec[i] / |W_dec[i]|
        w = w / w.norm().clamp(min=1e-8)
    if spec.method == "write-up clamp":
        return torch.clamp(w * spec.max_act * spec.hi, min=w * spec.max_act * spec.lo)
    if spec.method == "add":
        return w * spec.max_act * spec.coeff
    raise ValueError(f"{spec.method!r} is not additive: it depends on the activation")


# --- the hook -----------------------------------------------------------------------------------


class SteeringHook:
    """The forward hook that steers one generation; a fresh one per run (it counts positions).

    With TransformerLens's KV cache the hook sees the whole prompt once, then one position per new
    token; ``_seen`` tracks the absolute position of the first activation in each call, so
    ``positions="generated"`` can leave the prompt (all but its last token) untouched.
    """

    def __init__(
        self,
        sae: SAE,
        specs: Sequence[SteeringSpec],
        positions: Positions = "all",
        prompt_len: int = 1,
        row_scales: Tensor | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> None:
        self.sae = sae
        self.first_pos = 0 if positions == "all" else prompt_len - 1
        self.on_step = on_step
        additive = [steering_vector(sae, s) for s in specs if s.method != "clamp activation"]
        self._additive = torch.stack(additive).sum(0) if additive else None  # (d_in,)
        clamps = [s for s in specs if s.method == "clamp activation"]
        self._clamp_idx = torch.tensor([s.latent for s in clamps], dtype=torch.long)  # (k,)
        self._clamp_val = torch.tensor([s.coeff * s.max_act for s in clamps])  # (k,)
        self._row_scales = row_scales  # (batch,) or None
        self._seen = 0
        self._cast: dict[tuple[torch.dtype, torch.device], Tensor | None] = {}
        # Where the decoder writes and the encoder reads (the same hook except for transcoders); set
        # by ``steering_hooks``. A transcoder's "clamp activation" encodes what ``capture_input`` saw.
        self.out_site: sae_hooks.HookSite | None = None
        self.in_site: sae_hooks.HookSite | None = None
        self._input: Tensor | None = None
        self._heads: tuple[int, int] | None = None  # (head, d_head) of a per-head hook, once seen

    def restart(self) -> None:
        """Count positions from the prompt again: the same run starts over (the engine's eager redo after
        a failed compiled attempt, which already ran the prompt through this hook)."""
        self._seen = 0

    def capture_input(self, act: Tensor, hook: object = None) -> Tensor:
        """Read-only hook at a transcoder's input hook: keep the activation the encoder reads."""
        self._input = act if self.in_site is None else sae_hooks.to_sae_space(self.in_site, act)
        return act

    def _additive_as(self, act: Tensor) -> Tensor | None:
        # Cast once per dtype/device, not once per token.
        key = (act.dtype, act.device)
        if key not in self._cast:
            self._cast[key] = None if self._additive is None else self._additive.to(act.device, act.dtype)
        return self._cast[key]

    def _clamp_delta(self, act: Tensor) -> Tensor:
        """Change of the SAE reconstruction when the clamped latents are set. ``act``: (batch, pos, d_in),
        what the encoder reads at these positions."""
        sae = self.sae
        x = act.to(sae.W_dec.dtype)
        if self._heads is not None and getattr(sae, "hook_z_reshaping_mode", False):
            x = x.unflatten(-1, self._heads)  # SAELens's hook_z SAE encodes (..., head, d_head) itself
        z = sae.encode(x)  # (batch, pos, d_sae)
        z_new = z.clone()
        idx = self._clamp_idx.to(z.device)
        target = self._clamp_val.to(z.device, z.dtype).expand(z.shape[0], z.shape[1], -1)  # (batch, pos, k)
        if self._row_scales is not None:
            target = target * self._row_scales.to(z.device, z.dtype)[:, None, None]
        z_new[..., idx] = target
        # One decode of both codes: an SAE that normalises its input (normalize_activations "layer_norm",
        # "constant_norm_rescale") keeps encode's per-token scale for a single decode, which consumes it.
        both = sae.decode(torch.stack((z_new, z)))  # (2, batch, pos, d_in), or (..., head, d_head) for hook_z
        return (both[0] - both[1]).reshape(act.shape).to(act.dtype)  # (batch, pos, d_in)

    def decode_add(self, batch: int) -> Tensor | None | bool:
        """What this hook adds at every position once decoding has started (each one is steered then):
        (batch, d_in), None when nothing, False when it depends on the activation (``clamp activation``).
        The engine's compiled decode step applies it from a fixed buffer."""
        if len(self._clamp_idx):
            return False
        if self._additive is None:
            return None
        add = self._additive.expand(batch, -1)  # (batch, d_in)
        if self._row_scales is not None:
            add = self._row_scales.to(add)[:, None] * add
        return add

    def __call__(self, act: Tensor, hook: object = None) -> Tensor:
        head = getattr(self.sae.cfg.metadata, "hook_head_index", None)
        if act.ndim == 4 and head is not None:  # an SAE on one head reads and writes only that head
            self._heads = (1, int(act.shape[-1]))
            out = act.clone()
            out[..., head, :] = self._steer(act[..., head, :])
            return out
        if act.ndim == 4:  # a per-head hook (attn.hook_z: batch, pos, head, d_head): the SAE reads and
            # writes the heads flattened to d_in, as SAELens's hook_z reshaping does
            self._heads = tuple(act.shape[-2:])
            return self._steer(act.flatten(-2)).unflatten(-1, self._heads)
        return self._steer(act)

    def _steer(self, act: Tensor) -> Tensor:
        # act: (batch, pos, d_in)
        start = self._seen
        self._seen += act.shape[1]
        if self.on_step is not None:
            self.on_step()
        width = sae_hooks.d_out(self.sae)
        if act.shape[-1] != width:
            raise CompatibilityError(
                f"The SAE writes width {width} at its output hook but the model gives {act.shape[-1]}: "
                "load an SAE trained on this model."
            )
        local_first = max(self.first_pos - start, 0)
        if local_first >= act.shape[1] or (self._additive is None and len(self._clamp_idx) == 0):
            return act
        part = act[:, local_first:]  # (batch, steered_pos, d_out)
        delta = None
        add = self._additive_as(act)
        if add is not None:
            delta = add if self._row_scales is None else self._row_scales.to(act)[:, None, None] * add
        if len(self._clamp_idx):
            if self._input is not None:  # a transcoder: encode what its input hook saw at these positions
                enc_in = self._input[:, local_first:]
            else:
                enc_in = part if self.out_site is None else sae_hooks.to_sae_space(self.out_site, part)
            clamp = self._clamp_delta(enc_in)
            delta = clamp if delta is None else delta + clamp
        if self.out_site is not None:
            delta = sae_hooks.to_model_space(self.out_site, delta)
        if local_first == 0:
            return act + delta
        out = act.clone()
        out[:, local_first:] = part + delta
        return out


@contextmanager
def steering_hooks(
    model: HookedTransformer,
    sae: SAE,
    specs: Sequence[SteeringSpec],
    positions: Positions = "all",
    prompt_len: int = 1,
    row_scales: Tensor | None = None,
    on_step: Callable[[], None] | None = None,
) -> Iterator[SteeringHook]:
    """Steer ``model`` for the body of the ``with``; every hook is removed on exit, also on error.

    ``row_scales`` (batch,) multiplies every spec's multipliers per batch row (the dose-response sweep
    runs all its values as one batch). Callers sharing a model hold its queue slot around this.
    """
    # Decoder directions go where the SAE writes: its output hook (a transcoder's differs from its input).
    out_site = sae_hooks.resolve(model, sae_hooks.output_hook(sae))
    hook = SteeringHook(sae, specs, positions, prompt_len, row_scales, on_step)
    hook.out_site = None if out_site.gain is None else out_site
    # Nothing to steer or count: add no hook at all, so an unsteered run is plain TransformerLens.
    hooks = [(out_site.model_hook, hook)] if specs or on_step is not None else []
    if hooks and sae_hooks.is_transcoder(sae) and any(s.method == "clamp activation" for s in specs):
        hook.in_site = sae_hooks.resolve(model, sae_hooks.input_hook(sae))
        hooks.insert(0, (hook.in_site.model_hook, hook.capture_input))
    with model.hooks(fwd_hooks=hooks):
        yield hook


# --- what the page starts from --------------------------------------------------------------------


def url_max_act_latent(url_latent: str | None, url_max_act: str | None, d_sae: int) -> tuple[int | None, str | None]:
    """The latent a link's ``max_act`` belongs to (``?latent=03&max_act=2.5``: latent 3), and a note when
    the link has a max_act that belongs to no single latent (``?latent=3,5&max_act=2.5``)."""
    if not url_latent or url_max_act is None or len(url_latent) > LIMITS.max_text_chars:
        return None, None
    try:
        latents = parse_latents(url_latent, d_sae)
    except InputError:
        return None, None  # the latent list's own message says what is wrong with it
    if len(latents) == 1:
        return latents[0], None
    return None, (f"The link's max_act={quoted(url_max_act)} is for one latent, and the link names "
                  f"{len(latents)}: each uses the latent index's value.")


def default_max_act(index: object | None, latent: int, from_url: str | None = None) -> tuple[float, str | None]:
    """The max activation to steer ``latent`` with, and a note for the user when it is a guess.

    Order: the value the latent browser put in the URL, the latent index's ``max_act``, else 1.0.
    """
    if from_url:
        try:
            value = float(from_url)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and 0 < value <= LIMITS.max_latent_activation:
            return value, None
        if math.isfinite(value) and value > LIMITS.max_latent_activation:
            note = f"The link's max_act={quoted(from_url)} is above this server's limit of {LIMITS.max_latent_activation:,g}. "
        else:
            note = f"The link's max_act={quoted(from_url)} is not a positive number. "
    else:
        note = ""
    if index is not None:
        value = float(index.max_act[latent])
        if value > 0:
            return value, (note + "Using the latent index's value.") if note else None
        return 1.0, note + f"Latent {latent} never fired while the index was built (max 0): using 1.0."
    return 1.0, note + "No latent index is loaded, so the max activation is unknown: 1.0 is used; type a better value."
