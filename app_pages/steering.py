"""Steering playground: push latents, read normal vs steered text, sweep the strength."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lab_ui import as_text, current_index, seed_input, show_error, sidebar, workspace_or_stop
from sae_lib import generation, render, sae_hooks, steering
from sae_lib.dose_response import dose_response
from sae_lib.errors import LatentLabError
from sae_lib.limits import LIMITS, check_prompt
from sae_lib.model_queue import queue_for

ws = workspace_or_stop()
sidebar(ws)
d_sae = int(ws.sae.cfg.d_sae)
M = float(LIMITS.max_multiplier)

st.title("Steering playground")
st.markdown(
    f"Add a latent's decoder direction into `{sae_hooks.output_hook(ws.sae)}` while the model writes, and compare with "
    "what it writes unsteered. Normal and steered sample *i* share one random stream, so every "
    "difference comes from the steering. Multipliers are in units of the latent's max activation."
)

# --- what to steer --------------------------------------------------------------------------------
url_latent = st.query_params.get("latent")
url_max_act = st.query_params.get("max_act")
from sae_lib.demo.guide import DEMO_PROMPT, is_demo  # noqa: E402

problem: str | None = None
# On the demo a story opening (its tiny LM only tells stories); the write-up's prompt is one click away.
if "steer_prompt" not in st.session_state:
    st.session_state["steer_prompt"] = DEMO_PROMPT if is_demo(ws) else steering.WRITEUP_PROMPT
prompt = st.text_area(
    f"Prompt (up to {LIMITS.max_prompt_chars:,} characters)", max_chars=LIMITS.max_text_chars, key="steer_prompt",
)  # fmt: skip
st.button("Use the write-up's prompt", key="steer_writeup_prompt",
          on_click=lambda: st.session_state.update(steer_prompt=steering.WRITEUP_PROMPT))
try:
    check_prompt(prompt)
except LatentLabError as err:
    problem = str(err)
    show_error(problem)
latents_text = st.text_input(
    f"Latents to steer (numbers from 0 to {d_sae - 1}, comma-separated; at most {LIMITS.max_steered_latents})",
    value=url_latent if url_latent and len(url_latent) <= LIMITS.max_text_chars else "",
    max_chars=LIMITS.max_text_chars,
    key="steer_latents",
    help="The Latent browser's 'Steer' button fills this in; you can also type latent numbers.",
)

# The list is parsed and bounded before a single per-latent widget is built: a link naming a thousand
# latents gets its message here, at the top, not after a thousand sliders.
specs: list[steering.SteeringSpec] = []
try:
    latents = steering.parse_latents(latents_text, d_sae)
except LatentLabError as err:
    latents = []
    problem = str(err)
    show_error(problem)

url_for, url_note = steering.url_max_act_latent(url_latent, url_max_act, d_sae)
if url_note and latents:
    st.caption(as_text(url_note))
for latent in latents:
    with st.container(border=True):
        c_method, c_max, c_hi, c_lo = st.columns([2, 1, 2, 2])
        method = c_method.selectbox(
            f"Latent {latent}: method", steering.METHODS, key=f"steer_method_{latent}",
            help=steering.METHOD_HELP["write-up clamp"] + " " + steering.METHOD_HELP["add"] + " "
            + steering.METHOD_HELP["clamp activation"],
        )  # fmt: skip
        default, note = steering.default_max_act(current_index(ws), latent, url_max_act if latent == url_for else None)
        if note:
            c_max.caption(as_text(note))
        # No max_value: the browser would silently clamp a typed value; the spec's check says why instead.
        max_act = c_max.number_input(
            "max activation", min_value=0.0, value=default, key=f"steer_max_{latent}",
            help="The latent's largest activation on text; every multiplier is measured in it. "
            f"At most {LIMITS.max_latent_activation:,g} on this server.",
        )  # fmt: skip
        try:
            if method == "write-up clamp":
                hi = c_hi.slider("hi (positive components)", -M, M, 10.0, 0.5, key=f"steer_hi_{latent}",
                                 help=steering.METHOD_HELP[method])
                lo = c_lo.slider("lo (negative components)", -M, M, 5.0, 0.5, key=f"steer_lo_{latent}",
                                 help=steering.METHOD_HELP[method])
                specs.append(steering.SteeringSpec(latent, method, max_act, hi=hi, lo=lo))
            else:
                label = "coefficient" if method == "add" else "target activation (× max)"
                coeff = c_hi.slider(label, -M, M, 10.0, 0.5, key=f"steer_coeff_{latent}",
                                    help=steering.METHOD_HELP[method])
                specs.append(steering.SteeringSpec(latent, method, max_act, coeff=coeff))
        except LatentLabError as err:
            problem = str(err)
            show_error(problem)
try:
    steering.check_specs(specs, d_sae)
except LatentLabError as err:
    problem = str(err)
    show_error(problem)

with st.expander("Generation settings", expanded=False):
    c1, c2, c3 = st.columns(3)
    n_samples = c1.slider("Samples (one batch)", 1, LIMITS.max_samples, min(5, LIMITS.max_samples), key="steer_samples")
    max_new = c2.slider("Tokens to generate", 1, LIMITS.max_new_tokens, min(50, LIMITS.max_new_tokens), key="steer_tokens")
    seed = seed_input(c3, "steer_seed")
    temperature = c1.slider("Temperature", 0.0, float(LIMITS.max_temperature), 0.05, 0.01, key="steer_temp",
                            help="0 is greedy (TransformerLens then ignores the frequency penalty).")
    freq_penalty = c2.slider("Frequency penalty", 0.0, float(LIMITS.max_freq_penalty), 2.0, 0.1, key="steer_freq")
    positions = c3.radio("Steer positions", steering.POSITIONS, key="steer_positions", help=steering.POSITIONS_HELP)
if seed is None:
    problem = "The seed is out of range."
    show_error("The seed (in Generation settings) is out of range: type a smaller one to generate.")
st.caption(f"Limits on this server: {LIMITS.max_samples} samples, {LIMITS.max_new_tokens} tokens, "
           f"multipliers within ±{M:g}. Stop interrupts a run.")


def waiting(status):
    def on_wait(ahead: int) -> None:
        if ahead:
            status.info(f"Waiting for the model: {ahead} run(s) ahead of you.")
        else:  # our turn: the run's own progress follows
            status.empty()
    return on_wait


def progress_bar(bar):
    def progress(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0), text=f"Generating: step {done} of {total}")
    return progress


def changed_note(made_with: dict, now: dict, what: str) -> None:
    """Under a result kept from an earlier run: which of its inputs differ from the page's now."""
    changed = [name for name, value in now.items() if made_with.get(name) != value]
    if changed:
        st.caption(f"This {what} is from earlier settings: {', '.join(changed)} changed since. "
                   "Run it again to see the current ones.")


def stopped_note(pending_key: str, result_key: str, what: str) -> None:
    """Say so when the last run of ``what`` never finished (Stop, or a setting changed while it ran)."""
    if st.session_state.pop(pending_key, False):
        shown = (f"the {what} below is from the run before it" if result_key in st.session_state
                 else f"no {what} is shown")
        st.warning(f"The last {what} run was stopped before it finished (Stop, or a setting changed while it "
                   f"ran), so {shown}. Press the button again to rerun it.")


# What a result was made with, to say when the page's inputs have moved on since (a visitor tweaking
# sliders must not read an old table as the new setting's).
gen_inputs = {"the prompt": prompt, "the latents or their settings": tuple(specs),
              "the generation settings": (n_samples, max_new, seed, temperature, freq_penalty, positions)}
c_go, c_stop = st.columns([1, 6])
go_clicked = c_go.button("Generate", type="primary", key="steer_go", disabled=problem is not None)
c_stop.button("Stop", key="steer_stop", help="Interrupts a running generation (the model is left unsteered).")

if go_clicked:
    # Cleared only when the run ends on its own: a Stop interrupts the script before that line.
    st.session_state["steer_pending"] = True
    status, bar = st.empty(), st.empty()
    try:
        settings = generation.GenerationSettings(
            max_new_tokens=int(max_new), n_samples=int(n_samples), temperature=float(temperature),
            freq_penalty=float(freq_penalty), seed=int(seed), positions=positions,
        )
        result = generation.generate(ws.model, ws.sae, prompt, specs, settings,
                                   progress=progress_bar(bar), on_wait=waiting(status))
        label = ("latent " if len(specs) == 1 else "latents ") + ", ".join(str(s.latent) for s in specs)
        st.session_state["steer_result"] = (result, label, gen_inputs)
    except LatentLabError as err:
        st.session_state.pop("steer_result", None)
        show_error(err)
    finally:
        status.empty()
        bar.empty()
    st.session_state.pop("steer_pending", None)
else:
    stopped_note("steer_pending", "steer_result", "generation")

if "steer_result" in st.session_state:
    result, label, *made_with = st.session_state["steer_result"]  # a session from before a code reload: 2 items
    if not result.steered:
        st.info("No latent selected: only the normal output is shown.")
    if made_with:
        changed_note(made_with[0], gen_inputs, "table")
    st.html(render.comparison_table_html(result, label))  # HTML only: model text never goes through Markdown
    st.caption(
        "Each row is one sample: the normal output and, beside it, the steered output drawn from the same "
        "random stream. Highlighted: the words of the steered output that differ from the normal output "
        "beside it. ↵ is a newline."
    )

# --- dose-response --------------------------------------------------------------------------------
st.subheader("Dose-response: how strong is too strong")
st.markdown(
    "Every multiplier above is scaled by each value below (1 = the sliders' setting), one sample per value, "
    "all in one batch. **KL** is how far steering moves the model's next-token distribution from the "
    "unsteered one (right after the prompt, and averaged over the text it then writes). Below it, the "
    "steered latent's activation two ways: **at the hook, steered** (what steering puts into the latent "
    "where it writes the text: it rises with the scale unless the latent's encoder barely reads its own "
    "decoder direction) and **on the text, unsteered** (how strongly the "
    "latent fires when the unsteered model reads the steered text: whether the text itself now evokes it). "
    "Steering starts to act where KL leaves 0; text usually breaks where KL keeps climbing but the "
    "latent's activation on the text stops rising."
)
largest = max((abs(m) for s in specs for m in s.multipliers()), default=1.0) or 1.0
max_scale = M / largest
c1, c2, c3 = st.columns(3)
lo_hi = c1.slider("Scale range", 0.0, float(max_scale), (0.0, float(min(2.0, max_scale))), key="sweep_range")
n_points = c2.slider("Points", 2, LIMITS.max_sweep_points, min(9, LIMITS.max_sweep_points), key="sweep_points")
sweep_tokens = c3.slider("Tokens per sample", 1, LIMITS.max_new_tokens, min(20, LIMITS.max_new_tokens), key="sweep_tokens")
sweep_inputs = {**gen_inputs, "the sweep's range, points or tokens": (lo_hi, n_points, sweep_tokens)}
sweep_inputs["the generation settings"] = (seed, temperature, freq_penalty, positions)  # the sweep's own count and length
if st.button("Run sweep", key="sweep_go", disabled=problem is not None or not specs):
    st.session_state["sweep_pending"] = True
    status = st.empty()
    try:
        scales = [lo_hi[0] + (lo_hi[1] - lo_hi[0]) * i / (n_points - 1) for i in range(n_points)]
        settings = generation.GenerationSettings(
            max_new_tokens=int(sweep_tokens), n_samples=1, temperature=float(temperature),
            freq_penalty=float(freq_penalty), seed=int(seed), positions=positions,
        )
        with st.spinner("Sweeping (one batch of all scales)..."):
            dr = dose_response(ws.model, ws.sae, prompt, specs, scales, settings, on_wait=waiting(status))
        st.session_state["sweep_result"] = (dr, [s.latent for s in specs], sweep_inputs)
    except LatentLabError as err:
        st.session_state.pop("sweep_result", None)
        show_error(err)
    finally:
        status.empty()
    st.session_state.pop("sweep_pending", None)
else:
    stopped_note("sweep_pending", "sweep_result", "sweep")

if "sweep_result" in st.session_state:
    dr, swept, *made_with = st.session_state["sweep_result"]
    if made_with:
        changed_note(made_with[0], sweep_inputs, "sweep")
    scales = dr.scales.tolist()
    # Two panels on one x-axis rather than a secondary y-axis: KL and activations have unrelated units,
    # and a secondary axis synced to the first gets ticks such as 0.976, 0.36, -0.256.
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
        subplot_titles=["How far steering moves the model", "The steered latent's activation"],
    )  # fmt: skip
    fig.add_trace(go.Scatter(x=scales, y=dr.kl_next_token.tolist(), name="KL, next token", mode="lines+markers"), row=1, col=1)
    fig.add_trace(go.Scatter(x=scales, y=dr.kl_generated.tolist(), name="KL, mean over text", mode="lines+markers"), row=1, col=1)
    for j in range(dr.latent_acts.shape[1]):
        fig.add_trace(
            go.Scatter(x=scales, y=dr.steered_acts[:, j].tolist(), name=f"latent {swept[j]} at the hook, steered",
                       mode="lines+markers"),
            row=2, col=1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=scales, y=dr.latent_acts[:, j].tolist(), name=f"latent {swept[j]} on the text, unsteered",
                       mode="lines+markers", line={"dash": "dot"}),
            row=2, col=1,
        )  # fmt: skip
    fig.update_xaxes(title_text="scale of the multipliers (1 = sliders)", row=2, col=1)
    fig.update_yaxes(title_text="KL(steered ‖ unsteered), nats", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="latent activation", rangemode="tozero", row=2, col=1)
    fig.update_layout(height=620)
    st.plotly_chart(fig, key="sweep_chart")
    st.dataframe(
        pd.DataFrame({"scale": scales, "text": [render.show_newlines(t) for t in dr.texts]}),
        hide_index=True, key="sweep_table",
    )

if ws.warm_up is not None and ws.warm_up.is_alive():
    st.caption("The generation engine is compiling its decode step (once per server start, about two "
               "minutes for Qwen3-8B on an H100); a generation asked for now starts right after it.")
queue_ahead = queue_for(ws.model).ahead_of_new_arrival()
if queue_ahead:
    st.caption(f"{queue_ahead} run(s) are using or waiting for the model right now.")
