"""The flagship speed check in one command: Qwen3-8B's exact shape on one GPU; prints one JSON object.

    python bench/gpu.py                       # one H100: about 6.5 minutes (estimated; training compiles SAE step and forward)
    python bench/gpu.py --preset demo-shape   # the same steps at the demo's shape: a CPU smoke test (seconds)

Random bfloat16 weights of the exact Qwen3-8B shape are built directly on the GPU (no float32 copy, no
CPU copy) and wrapped as the app wraps a loaded model (HookedTransformer over the Hugging Face module's
tensors, the module as generation engine); a 65,536-latent JumpReLU SAE sits on
``blocks.28.hook_mlp_out`` with thresholds calibrated to an L0 of about 125. Then, CUDA synchronized
around every timing, each figure against a baseline measured in this same run:

- ``bandwidth``: a device-to-device copy (GB/s), the yardstick of the bounds below;
- ``generation``: engine tokens/s at batch 1 and 5, unsteered and steered (the write-up's clamp and
  settings), as a fraction of the bandwidth bound (batch x bandwidth / weight bytes: every decode step
  reads every weight once), against eager Hugging Face ``generate`` on the same weights, against the
  engine with compilation off, and (batch 5) against today's TransformerLens path;
- ``index``: the latent index pass (``sae_lib.latent_index.build_index``) tokens/s against the bare
  forward it rests on (model to the hook + SAE encode), its fixed costs (SAE hash, logit lens) apart;
- ``training``: SAELens's trainer (the ``qwen3-8b`` preset's SAE settings, activations from the
  engine) tokens/s over 200 steps against the bare forward to the hook, and a profile of one SAE step
  (its device time and top kernels, ``sae_step_profile``);
- ``load`` (when time is left): a saved random 8B folder loaded by ``sae_lib.model.load_model``:
  seconds and peak resident memory.

Goals (issue 11) are printed next to each figure. A step that fails records its error and the run goes
on, so one JSON object always comes out.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from sae_lib.random_models import DEMO_SHAPE, QWEN3_8B, calibrated_sae, flagship_layer, l0_of, random_model
from sae_lib.timing import sync, timed


@dataclass(frozen=True)
class Preset:
    shape: dict
    dtype: torch.dtype
    d_sae: int
    new_tokens: int
    prompt_tokens: int
    repeats: int
    index_rows: int
    context: int
    train_steps: int
    train_batch_tokens: int
    bandwidth_bytes: int
    deadline_s: float
    """Later steps are skipped (and say so) once this much time has passed. A step that starts before it
    runs to its end: training, the last, then takes about 2.5 minutes more on an H100 (estimated)."""
    time_budget_s: float
    """The optional load check runs only when less than this much time has passed (0: never; it starts
    a fresh interpreter, which alone costs more than the smoke test's budget)."""


STEPS = ("generation", "index", "training", "load")
"""What one run measures, in order (``--only`` picks some)."""

PRESETS: dict[str, Preset] = {
    "flagship": Preset(QWEN3_8B, torch.bfloat16, 65536, new_tokens=64, prompt_tokens=16, repeats=2,
                       index_rows=256, context=128, train_steps=200, train_batch_tokens=4096,
                       bandwidth_bytes=1 << 30, deadline_s=280.0, time_budget_s=240.0),
    "demo-shape": Preset(DEMO_SHAPE, torch.float32, 1024, new_tokens=16, prompt_tokens=8, repeats=1,
                         index_rows=64, context=32, train_steps=20, train_batch_tokens=256,
                         bandwidth_bytes=1 << 24, deadline_s=0.0, time_budget_s=0.0),
}


@dataclass
class GpuBenchConfig:
    preset: Literal["flagship", "demo-shape"] = "flagship"
    """flagship: Qwen3-8B's shape in bfloat16 (needs a ~80 GB GPU); demo-shape: the demo's shape, any device."""
    out: str = ""
    """Also write the JSON to this file (e.g. docs/bench_gpu_h100.json)."""
    skip_load: bool = False
    """Skip the saved-folder load check even when there is time for it."""
    compile_sae: bool | None = None
    """Training step: SAELens's ``compile_sae`` (torch.compile of the SAE's training forward); None: the
    ``qwen3-8b`` preset's setting (on)."""
    compile_llm: bool | None = None
    """Training step: SAELens's ``compile_llm`` (the engine's forward to the hook, compiled), and the bare
    forward timed compiled as well; None: the ``qwen3-8b`` preset's setting (on). True also times that
    compiled forward among the index step's per-batch parts."""
    only: tuple[str, ...] = ()
    """Run only these steps (generation, index, training, load); all by default."""


def _step(report: dict, name: str, fn) -> None:
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries' prints must not break the one JSON object
            report[name] = fn()
    except Exception as err:  # one failing step must not lose the others' figures
        report[name] = {"error": f"{type(err).__name__}: {str(err)[:500]}", "trace": traceback.format_exc()[-1500:]}
    if isinstance(report[name], dict):
        report[name]["step_s"] = round(time.perf_counter() - t0, 1)


def bandwidth(preset: Preset, device: str) -> dict:
    """Device memory bandwidth from a large copy: bytes read + bytes written per second."""
    src = torch.empty(preset.bandwidth_bytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    s = timed({"copy": lambda: dst.copy_(src)}, 10, device)["copy"]
    del src, dst
    return {"bytes": preset.bandwidth_bytes, "gb_per_s": round(2 * preset.bandwidth_bytes / s / 1e9, 1)}


def generation(model, sae, preset: Preset, device: str, bandwidth_gbs: float | None) -> dict:
    from sae_lib.engine import engine_for, transformerlens_only
    from sae_lib.generation import GenerationSettings, sample_tokens
    from sae_lib.steering import SteeringSpec

    engine = engine_for(model)
    settings = GenerationSettings(max_new_tokens=preset.new_tokens, n_samples=1, stop_at_eos=False)
    spec = [SteeringSpec(0, "write-up clamp", max_act=1.0)]
    prompt = torch.randint(0, model.cfg.d_vocab, (1, preset.prompt_tokens), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(device)
    weight_bytes = sum(p.numel() * p.element_size() for p in engine.hf.parameters())
    out: dict = {"engine": engine.mode, "weight_gb": round(weight_bytes / 1e9, 2), "new_tokens": preset.new_tokens}
    for batch_size in (1, 5):
        batch = prompt.expand(batch_size, -1)

        def hf_generate(b=batch):
            with torch.inference_mode():
                engine.hf.generate(b, attention_mask=torch.ones_like(b), max_new_tokens=preset.new_tokens,
                                   min_new_tokens=preset.new_tokens, do_sample=True, temperature=0.05, top_k=None,
                                   top_p=None, use_cache=True, pad_token_id=0)

        def eager(specs, b=batch):
            compiled = engine.compile_decode
            engine.compile_decode = False
            try:
                return sample_tokens(model, sae, b, specs, settings)
            finally:
                engine.compile_decode = compiled

        # First calls compile and capture (when on): timed apart, not in the figures.
        sync(device)
        t0 = time.perf_counter()
        sample_tokens(model, sae, batch, [], settings)
        sample_tokens(model, sae, batch, spec, settings)
        sync(device)
        first_s = time.perf_counter() - t0
        fns = {
            "unsteered": lambda b=batch: sample_tokens(model, sae, b, [], settings),
            "steered": lambda b=batch: sample_tokens(model, sae, b, spec, settings),
            "hf_generate_eager": hf_generate,
            "engine_eager_unsteered": lambda: eager([]),
        }
        # The eager baselines take seconds per call (the compiled runs a fraction of one): no separate
        # warm-up call for them (the compiled runs above already loaded every kernel they share), the
        # faster of two calls. Saves about 10 s of the run on an H100.
        s = timed({k: fns[k] for k in ("unsteered", "steered")}, preset.repeats, device)
        s |= timed({k: fns[k] for k in ("hf_generate_eager", "engine_eager_unsteered")}, max(2, preset.repeats),
                   device, warmup=False)
        new = batch_size * preset.new_tokens
        row: dict = {f"{k}_tokens_per_s": round(new / v, 1) for k, v in s.items()}
        row["first_calls_s"] = round(first_s, 1)
        row["steered_over_unsteered_speed"] = round(s["unsteered"] / s["steered"], 3)
        row["unsteered_over_hf_generate_eager"] = round(s["hf_generate_eager"] / s["unsteered"], 2)
        row["steered_over_hf_generate_eager"] = round(s["hf_generate_eager"] / s["steered"], 2)
        if bandwidth_gbs:
            bound = batch_size * bandwidth_gbs * 1e9 / weight_bytes
            row["bandwidth_bound_tokens_per_s"] = round(bound, 1)
            row["unsteered_fraction_of_bound"] = round(new / s["unsteered"] / bound, 3)
            row["steered_fraction_of_bound"] = round(new / s["steered"] / bound, 3)
        if batch_size == 5:
            with transformerlens_only(model):
                t_tl = timed({"tl": lambda b=batch: sample_tokens(model, sae, b, [], settings)}, 1, device)["tl"]
            row["transformerlens_tokens_per_s"] = round(new / t_tl, 1)
            row["unsteered_over_transformerlens"] = round(t_tl / s["unsteered"], 2)
        out[f"batch_{batch_size}"] = row
    out["compile_failed"] = engine.compile_failed
    out["goals"] = {"batch_5_fraction_of_bound": ">= 0.6", "batch_1_fraction_of_bound": ">= 0.5",
                    "steered_over_unsteered_speed": ">= 0.95", "over_hf_generate_eager": ">= 3"}
    return out


def index_pass(model, sae, preset: Preset, device: str, compile_llm: bool = False) -> dict:
    """The latent index pass against the bare forward it rests on (model to the hook + SAE encode).

    Two builds, 2 batches and 2 + ``index_rows / batch`` batches: the difference of their times is the
    streaming cost of the extra rows alone, free of what every build pays once (the SAE's weight hash and
    fingerprint, the logit lens, moving the contexts to the CPU), which is reported apart.
    """
    from sae_lib import latent_index as li
    from sae_lib.probe import encode_tokens

    cfg = li.IndexConfig(batch_size=32)
    short = 2 * cfg.batch_size
    tokens = torch.randint(0, model.cfg.d_vocab, (short + preset.index_rows, preset.context),
                           generator=torch.Generator().manual_seed(2))

    def bare():
        with torch.no_grad():
            for row in range(short, tokens.shape[0], cfg.batch_size):
                encode_tokens(model, sae, tokens[row : row + cfg.batch_size], tf32=cfg.tf32)

    s = timed({"bare": bare, "short": lambda: li.build_index(model, sae, tokens[:short], cfg),
               "long": lambda: li.build_index(model, sae, tokens, cfg)}, max(1, preset.repeats - 1), device)
    n = preset.index_rows * preset.context
    stream = max(s["long"] - s["short"], 1e-9)
    return {
        "tokens": n,
        "bare_tokens_per_s": round(n / s["bare"]),
        "index_stream_tokens_per_s": round(n / stream),
        "stats_over_bare": round(stream / s["bare"] - 1, 3),
        "per_build_fixed_s": round(s["short"] - stream * short / preset.index_rows, 2),
        "per_batch_ms": index_parts(model, sae, tokens[short : short + cfg.batch_size], cfg, device, preset.repeats,
                                    compiled=compile_llm),
        "how": f"{preset.index_rows} rows' tokens / (build of {short + preset.index_rows} rows - build of {short}): "
               "per-build costs excluded, reported as per_build_fixed_s",
        "goals": {"index_stream_tokens_per_s": ">= 28500 (1.5 x 19k)", "stats_over_bare": "<= 0.10"},
    }


def index_parts(model, sae, batch: torch.Tensor, cfg, device: str, repeats: int, compiled: bool = False) -> dict:
    """Where one index batch's time goes, each part timed alone on the same batch (ms): the forward to
    the hook, the SAE's encode in IEEE float32 and in TF32 (what the pass uses on CUDA), the per-latent
    statistics, and the two co-occurrence tables. Each part repeats on the same state, as a long pass's
    later batches do (few top contexts still change), so together they approximate one streaming batch."""
    from sae_lib.latent_index.build import PassStatistics
    from sae_lib.probe import hook_activations, tf32_matmuls
    from sae_lib.sae_hooks import input_hook

    batch = batch.to(next(model.parameters()).device)
    with torch.no_grad():
        acts = hook_activations(model, batch, input_hook(sae)).to(sae.device)
        feats = sae.encode(acts)
    stats = PassStatistics(int(sae.cfg.d_sae), int(model.cfg.d_vocab), cfg, sae.device)
    firing = stats.acc.update(feats, 0)
    skip = cfg.skip_positions
    toks = batch[:, skip:].reshape(-1).long()
    n_pos = toks.numel()

    def encode_tf32():
        with torch.no_grad(), tf32_matmuls(sae.device):
            sae.encode(acts)

    def tokens_table():  # with a merge, which the pass does only every few batches (HeavyHitters.merge_at)
        pos, lat = firing
        table = stats.counts.tokens
        table.update(lat, toks.to(stats.counts.device)[pos])
        getattr(table, "_merge", lambda: None)()

    parts = {
        "forward_to_hook": lambda: hook_activations(model, batch, input_hook(sae)),
        **({"forward_to_hook_compiled": lambda: hook_activations(model, batch, input_hook(sae), compiled=True)}
           if compiled else {}),  # the engine's compiled copy up to the hook (--compile-llm)
        "encode_ieee": lambda: sae.encode(acts),
        "encode_tf32": encode_tf32,
        "statistics": lambda: stats.acc.update(feats, 0),
        "token_counts": tokens_table,
        "cofire_counts": lambda: stats.counts._cofire(*firing, n_pos),
    }
    with torch.no_grad():
        s = timed(parts, repeats, device)
        with tf32_matmuls(sae.device):
            fast = sae.encode(acts)
    # What TF32 costs in accuracy on this batch: the share of (token, latent) firing decisions that
    # differ, and, where both fire, the largest activation difference relative to the largest activation.
    # (A flip near a JumpReLU threshold changes an activation by the whole threshold, so the two apart.)
    fires, fires_fast = feats > 0, fast > 0
    both = fires & fires_fast
    accuracy = {"tf32_firing_flips_per_firing": float((fires != fires_fast).sum() / fires.sum().clamp(min=1)),
                "tf32_max_abs_diff_where_both_fire_over_max_act":
                    float(((fast - feats) * both).abs().max() / feats.abs().max().clamp(min=1e-12))}
    return {name: round(1000 * t, 2) for name, t in s.items()} | {
        "firing_entries": int(firing[0].numel()), "tokens": int(batch.numel())} | accuracy


def training(model, sae_hook: str, preset: Preset, device: str, compile_sae: bool | None = None,
             compile_llm: bool | None = None) -> dict:
    """SAELens's trainer through the app's runner (activations from the engine), against the bare
    forward to the hook.

    Two runs, ``train_steps`` and a tenth of it: the difference of their times is the cost of the extra
    steps alone, free of setup, the activation-norm estimate and the shuffle buffer's first fill.
    """
    from datasets import Dataset
    from sae_lens.config import LoggingConfig

    from sae_lib.probe import hook_activations
    from sae_lib.training.runner import run_training
    from sae_lib.training.presets import PRESETS as TRAIN_PRESETS

    steps, batch_tokens, ctx = preset.train_steps, preset.train_batch_tokens, preset.context
    short = max(2, steps // 10)
    norm_batches = 10
    n_batches_in_buffer = 4 * batch_tokens // ctx  # SAELens 6.54's buffer holds n_batches_in_buffer x context tokens
    n_rows = (steps + norm_batches + 8) * batch_tokens // ctx + 2 * n_batches_in_buffer * 32
    rows = torch.randint(0, model.cfg.d_vocab, (n_rows, ctx), generator=torch.Generator().manual_seed(3))
    dataset = Dataset.from_dict({"input_ids": rows.tolist()})
    store_prompts = max(1, min(32, batch_tokens // ctx))
    base = TRAIN_PRESETS["qwen3-8b"]()  # the flagship preset's SAELens config, shrunk to the bench's run below
    compile_sae = base.compile_sae if compile_sae is None else compile_sae
    compile_llm = base.compile_llm if compile_llm is None else compile_llm

    def train(n_steps: int) -> float:
        sae_cfg = dataclasses.replace(base.sae, d_in=model.cfg.d_model, d_sae=preset.d_sae, l0_warm_up_steps=n_steps,
                                      device=device)
        cfg = dataclasses.replace(
            base, sae=sae_cfg, model_name="bench-random", hook_name=sae_hook, dataset_path="unused",
            streaming=False, is_dataset_tokenized=True, context_size=ctx, training_tokens=n_steps * batch_tokens,
            train_batch_size_tokens=batch_tokens, n_checkpoints=0, lr_decay_steps=0, device=device,
            llm_device=device, act_store_device=device,
            autocast=device == "cuda", autocast_lm=device == "cuda", store_batch_size_prompts=store_prompts,
            n_batches_in_buffer=n_batches_in_buffer, n_batches_for_norm_estimate=norm_batches,
            logger=LoggingConfig(log_to_wandb=False), output_path=None, compile_sae=compile_sae, compile_llm=compile_llm,
        )
        sync(device)
        t0 = time.perf_counter()
        # The app's runner (activations through the engine); unlike SAELens's own runner it puts the
        # SIGINT/SIGTERM handlers back afterwards, so a time limit's SIGTERM still ends this process.
        run_training(cfg, model=model, dataset=dataset, log=lambda _: None, progress_every_s=1e9)
        sync(device)
        return time.perf_counter() - t0

    # An untimed run first: it compiles the SAE's training forward (compile_sae) once for the timed runs
    # below, and the profiler reads where one SAE step's device time goes in its later steps.
    with sae_step_profile(range(short // 2, short), device) as profile:
        train(short)
    t_short, t_long = train(short), train(steps)

    # The bare forward's rate over a quarter of the timed steps' tokens (a steady rate by then: ~5 s
    # on an H100), not all of them: with its warm-up call and the compiled variant, timing all of them
    # cost about a minute of the run.
    bare_rows = max(store_prompts, (steps - short) * batch_tokens // ctx // 4)
    n_bare = bare_rows // store_prompts * store_prompts * ctx

    def bare():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
            for row in range(0, bare_rows - store_prompts + 1, store_prompts):
                hook_activations(model, rows[row : row + store_prompts], sae_hook)

    forwards = {"bare": bare}
    if compile_llm:  # the same forward through the engine's compiled copy up to the hook (compiled by the runs above)
        from sae_lib.engine import engine_for

        engine = engine_for(model)

        def bare_compiled():
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=device == "cuda"):
                for row in range(0, bare_rows - store_prompts + 1, store_prompts):
                    engine.activations(rows[row : row + store_prompts], sae_hook, compiled=True)

        forwards["bare_compiled"] = bare_compiled
    t = timed(forwards, 1, device)
    t_bare = t["bare"]
    n = (steps - short) * batch_tokens
    per_step = max(t_long - t_short, 1e-9)
    compiled_forward = {"bare_forward_compiled_tokens_per_s": round(n_bare / t["bare_compiled"]),
                        "compiled_over_eager_forward": round(t_bare / t["bare_compiled"], 3)} if compile_llm else {}
    return {
        "steps": steps, "batch_tokens": batch_tokens, "d_sae": preset.d_sae, "compile_sae": compile_sae,
        "compile_llm": compile_llm, **compiled_forward,
        "train_tokens_per_s": round(n / per_step),
        "bare_forward_tokens_per_s": round(n_bare / t_bare),
        "bare_forward_tokens": n_bare,
        "train_over_bare": round(n / per_step / (n_bare / t_bare), 3),
        "run_s": {f"{short}_steps": round(t_short, 1), f"{steps}_steps": round(t_long, 1)},
        "step_ms": round(1000 * per_step / (steps - short), 1),
        "sae_step_profile": profile,
        "how": f"({steps} - {short}) steps' tokens / (time of {steps} steps - time of {short}): setup excluded",
        "goals": {"train_tokens_per_s": ">= 30000"},
    }


@contextlib.contextmanager
def sae_step_profile(steps: range, device: str, top: int = 12):
    """Profile SAELens's ``SAETrainer._train_step`` (the SAE's forward, firing statistics, backward,
    gradient clipping, Adam) at the trainer steps in ``steps``; yields a dict filled on exit: the step's
    wall time and device time (CUDA kernels on a GPU, operators on the CPU) per step, and the ``top``
    kernels by that time, so a run says which part of the SAE step to cut. Each step is profiled alone:
    the language model's forward (between steps) is outside the window."""
    from torch.profiler import ProfilerActivity, profile

    from sae_lens.training.sae_trainer import SAETrainer

    result: dict = {"steps": [steps.start, steps.stop]}
    inner = SAETrainer._train_step
    totals: dict[str, float] = {}  # microseconds per kernel (shortened name) over the profiled steps
    wall = [0.0, 0]  # seconds, steps

    def train_step(trainer, sae, sae_in):
        if trainer.n_training_steps not in steps or "error" in result:
            return inner(trainer, sae, sae_in)
        # One profiler per step, started and stopped inside it: the activation store's forward through
        # the language model between two steps stays out of the figures.
        try:
            prof = profile(activities=[ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU])
            prof.start()
        except Exception as err:  # the profile is extra: a profiler that cannot start must not cost the run
            result["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            return inner(trainer, sae, sae_in)
        sync(device)
        t0 = time.perf_counter()
        try:
            out = inner(trainer, sae, sae_in)
            sync(device)
        finally:
            prof.stop()
        wall[0] += time.perf_counter() - t0
        wall[1] += 1
        try:
            for e in prof.key_averages():
                t = e.self_device_time_total if device == "cuda" else e.self_cpu_time_total
                if t > 0:
                    totals[e.key[:90]] = totals.get(e.key[:90], 0.0) + t
        except Exception as err:
            result["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        return out

    SAETrainer._train_step = train_step
    try:
        yield result
    finally:
        SAETrainer._train_step = inner
    if "error" in result:
        return
    if not wall[1]:  # the run ended before the window
        result["error"] = "the profiled steps were not reached"
        return
    n = wall[1]
    rows = sorted(totals.items(), key=lambda r: -r[1])
    result["profiled_steps"] = n
    result["wall_ms_per_step"] = round(1000 * wall[0] / n, 2)  # profiler overhead included
    result["device_ms_per_step"] = round(sum(t for _, t in rows) / n / 1000, 2)
    result["top_ms_per_step"] = {key: round(t / n / 1000, 2) for key, t in rows[:top]}


def load_check(preset: Preset, device: str) -> dict:
    """Save the random model's shape as a folder (bfloat16, written shard by shard) and load it with the
    app's loader in a fresh process: seconds and peak resident memory."""
    import subprocess

    from sae_lib.random_models import write_random_qwen3

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_random_qwen3(Path(tmp), "bfloat16" if preset.dtype == torch.bfloat16 else "float32", **preset.shape)
        write_s = time.perf_counter() - t0
        code = (
            "import json,resource,time,torch\n"
            "from sae_lib.model import load_model\n"
            "t=time.perf_counter(); m=load_model(%r, device=%r)\n"
            "torch.cuda.synchronize() if torch.cuda.is_available() else None\n"
            "print(json.dumps({'load_s': round(time.perf_counter()-t, 1), "
            "'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6, 2)}))"
        ) % (tmp, device)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"write_s": round(write_s, 1), **result}


def run(cfg: GpuBenchConfig) -> dict:
    start = time.perf_counter()
    preset = PRESETS[cfg.preset]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.preset == "flagship" and device != "cuda":
        raise SystemExit("The flagship preset needs a CUDA GPU with about 80 GB; use --preset demo-shape here.")
    import transformers

    report: dict = {
        "preset": cfg.preset,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(), "dtype": str(preset.dtype).removeprefix("torch."),
    }
    _step(report, "bandwidth", lambda: bandwidth(preset, device))
    t0 = time.perf_counter()
    model = random_model(preset.shape, preset.dtype, device)
    sync(device)
    report["model_build_s"] = round(time.perf_counter() - t0, 1)
    hook = f"blocks.{flagship_layer(preset.shape)}.hook_mlp_out"
    calib = torch.randint(0, preset.shape["vocab_size"], (32, 128), generator=torch.Generator().manual_seed(1))
    sae = calibrated_sae(model, hook, preset.d_sae, calib)
    check = torch.randint(0, preset.shape["vocab_size"], (8, 128), generator=torch.Generator().manual_seed(4))
    report["sae"] = {"hook": hook, "d_sae": preset.d_sae, "l0": round(l0_of(model, sae, check), 1),
                     "l0_goal": "100-150"}
    bw = report["bandwidth"].get("gb_per_s") if device == "cuda" else None
    for name, fn in (("generation", lambda: generation(model, sae, preset, device, bw)),
                     ("index", lambda: index_pass(model, sae, preset, device, cfg.compile_llm is True)),
                     ("training", lambda: training(model, hook, preset, device, cfg.compile_sae, cfg.compile_llm))):
        elapsed = time.perf_counter() - start
        if cfg.only and name not in cfg.only:
            continue
        if preset.deadline_s and elapsed > preset.deadline_s:  # stay within the promised run time
            report[name] = {"skipped": f"{elapsed:.0f} s elapsed (deadline {preset.deadline_s:.0f} s)"}
        else:
            _step(report, name, fn)
            if cfg.out:  # what is measured so far survives a run stopped from outside (a time limit)
                Path(cfg.out).write_text(json.dumps(report, indent=2) + "\n")
    if device == "cuda":
        report["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
    del model, sae
    elapsed = time.perf_counter() - start
    if cfg.only and "load" not in cfg.only:
        pass
    elif not cfg.skip_load and elapsed < preset.time_budget_s:
        if device == "cuda":
            torch.cuda.empty_cache()
        _step(report, "load", lambda: load_check(preset, device))
    else:
        report["load"] = {"skipped": f"{elapsed:.0f} s elapsed" if not cfg.skip_load else "--skip-load"}
    report["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    report["total_s"] = round(time.perf_counter() - start, 1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="flagship",
                        help="flagship: Qwen3-8B's shape, bf16, one ~80 GB GPU; demo-shape: the demo's shape (CPU smoke test)")
    parser.add_argument("--out", default="", help="also write the JSON here (e.g. docs/bench_gpu_h100.json)")
    parser.add_argument("--skip-load", action="store_true", help="skip the saved-folder load check")
    parser.add_argument("--eager-sae", action="store_true",
                        help="train without SAELens's compile_sae, which the qwen3-8b preset turns on (the eager baseline)")
    llm = parser.add_mutually_exclusive_group()
    llm.add_argument("--compile-llm", action="store_true",
                     help="train with compile_llm (the engine's forward to the hook compiled, the qwen3-8b preset's "
                          "setting) and also time that compiled forward among the index step's per-batch parts")
    llm.add_argument("--eager-llm", action="store_true",
                     help="train without compile_llm, which the qwen3-8b preset turns on (the eager-forward baseline)")
    parser.add_argument("--only", nargs="+", default=[], choices=STEPS, help="run only these steps (default: all)")
    args = parser.parse_args(argv)
    report = run(GpuBenchConfig(preset=args.preset, out=args.out, skip_load=args.skip_load,
                                compile_sae=False if args.eager_sae else None,
                                compile_llm=True if args.compile_llm else False if args.eager_llm else None,
                                only=tuple(args.only)))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
