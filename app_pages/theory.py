"""Theory: superposition in a toy model, trained live, and the SAE equations with a tiny SAE demo.

This page does not need the language model, so it does not load the workspace.
"""

import math

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from lab_ui import seed_input, show_error, toy_sae, toy_sweep
from sae_lib.errors import LatentLabError
from sae_lib.limits import LIMITS
from sae_lib.toy_model import REPRESENTED_NORM, ToyConfig, analyse, gram
from sae_lib.toy_sae import ToySAEConfig

# Choices for the ends of the sparsity range (probability that a feature is non-zero). A comment, not
# a docstring: Streamlit's "magic" would render a bare string in a page script.
PROBABILITIES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
DEFAULTS = ToyConfig.within_limits()  # an operator may set the toy limits below the usual defaults
SAE_DEFAULTS = ToySAEConfig.within_limits()


def importance_colours(importance) -> list[str]:
    """Lighter = more important, as in the write-up's figure (Viridis: dark purple to light yellow)."""
    imp = importance.tolist()
    lo, hi = min(imp), max(imp)
    return sample_colorscale("Viridis", [(v - lo) / (hi - lo) if hi > lo else 1.0 for v in imp])


st.title("Superposition, and why SAEs")
st.markdown(
    """
**The superposition hypothesis.** A language model has to track far more concepts than it has neurons:
thousands of words, facts and styles, in a few thousand dimensions. Most of those concepts are *sparse*:
any one is absent from almost every input. So a network can afford to give each concept a direction that
is only *nearly* orthogonal to the others. When two concepts rarely occur together their interference is
rarely paid for, and a ReLU with a negative bias filters out the small overlaps that remain. The price is
that single neurons respond to many unrelated things (they are *polysemantic*). To read such a model we
need to find those directions again: that is what a sparse autoencoder does.

Below, Anthropic's *Toy Models of Superposition* runs live: features are squeezed into a few hidden
neurons by `h = W x` and read back by `x̂ = ReLU(Wᵀ h + b)`, with more important features weighing more in
the loss. One model is trained per sparsity level, all at once as one batched model.
"""
)

# --- controls ---------------------------------------------------------------------------------
with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    n_features = c1.slider(
        "Features", 2, LIMITS.max_toy_features, DEFAULTS.n_features, key="toy_n_features",
        help="Number of input features squeezed into the hidden neurons.",
    )
    n_hidden = c1.number_input(
        "Hidden neurons", 1, LIMITS.max_toy_features, DEFAULTS.n_hidden, key="toy_n_hidden",
        help="Arrows need exactly 2; the heatmap and bars work for any number below the features.",
    )
    decay = c2.slider(
        "Importance decay", 0.5, 1.0, DEFAULTS.importance_decay, 0.01, key="toy_decay",
        help="Feature i matters decay^i as much as feature 0 in the loss.",
    )
    p_low, p_high = c2.select_slider(
        "Feature probability range (sparsest, densest)", PROBABILITIES,
        value=(DEFAULTS.min_probability, DEFAULTS.max_probability), key="toy_prob_range",
        help="Each feature is non-zero with this probability; levels are spaced geometrically between.",
    )
    n_levels = c2.slider("Sparsity levels", 1, LIMITS.max_toy_levels, DEFAULTS.n_levels, key="toy_levels")
    steps = c3.slider(
        "Training steps", 100, LIMITS.max_toy_steps, DEFAULTS.steps, 100, key="toy_steps",
        help=f"Adam steps at batch {DEFAULTS.batch_size}; {DEFAULTS.steps} reach the paper's solutions.",
    )
    seed = seed_input(c3, "toy_seed", DEFAULTS.seed)
if seed is None:
    st.stop()

try:
    cfg = ToyConfig(
        n_features=int(n_features),
        n_hidden=int(n_hidden),
        importance_decay=float(decay),
        max_probability=float(p_high),
        min_probability=float(p_low),
        n_levels=int(n_levels),
        steps=int(steps),
        seed=int(seed),
    )
    result = toy_sweep(cfg)
except LatentLabError as err:
    show_error(err)
    st.stop()

stats = analyse(result.W)
probs = result.feature_probability.tolist()
colours = importance_colours(result.importance)

# --- the arrow figure -------------------------------------------------------------------------
st.subheader("Each feature's direction in the hidden space, per sparsity level")
if cfg.n_hidden == 2:
    n_cols = min(5, len(probs))
    n_rows = math.ceil(len(probs) / n_cols)
    fig = make_subplots(
        rows=n_rows, cols=n_cols, subplot_titles=[f"p = {p:.3g}" for p in probs],
        horizontal_spacing=0.02, vertical_spacing=0.08,
    )
    reach = max(1.2, float(stats.norms.max()) * 1.1)
    for lvl in range(len(probs)):
        row, col = lvl // n_cols + 1, lvl % n_cols + 1
        for i in range(cfg.n_features):
            x, y = result.W[lvl, :, i].tolist()
            fig.add_trace(
                go.Scatter(
                    x=[0, x], y=[0, y], mode="lines+markers", line={"color": colours[i], "width": 3},
                    marker={"size": [0, 9], "color": colours[i]}, name=f"feature {i}",
                    legendgroup=f"f{i}", showlegend=lvl == 0,
                    hovertemplate=f"feature {i}<br>importance {result.importance[i]:.3f}"
                    f"<br>norm {stats.norms[lvl, i]:.2f}<extra></extra>",
                ),
                row=row, col=col,
            )
        axis = {"range": [-reach, reach], "showticklabels": False, "zeroline": True}
        fig.update_xaxes(axis, row=row, col=col)
        fig.update_yaxes(axis | {"scaleanchor": f"x{lvl + 1 if lvl else ''}"}, row=row, col=col)
    fig.update_layout(height=260 * n_rows, margin={"t": 40, "b": 10, "l": 10, "r": 10})
    st.plotly_chart(fig, key="toy_arrows")
    st.caption(
        "Lighter arrows are more important features; the panels run from dense inputs (first) to sparse "
        "(last). Dense: only the most important features get a direction, orthogonal to each other. Sparse: "
        "every feature gets one, packed closer than 90° (the default five make a pentagon), and the output "
        "biases turn negative to cut the interference."
    )
else:
    st.info("The arrow figure needs exactly 2 hidden neurons; the heatmap and bars below work for any number.")

# --- per-level measures -----------------------------------------------------------------------
st.subheader("How much is in superposition")
left, right = st.columns(2)
level = left.select_slider(
    "Sparsity level to inspect", options=list(range(len(probs))), value=len(probs) - 1,
    format_func=lambda i: f"p = {probs[i]:.3g}", key="toy_inspect_level",
)
heat = go.Figure(
    go.Heatmap(
        z=gram(result.W[level]).tolist(), colorscale="RdBu", zmid=0, zmin=-1.2, zmax=1.2,
        x=[f"f{i}" for i in range(cfg.n_features)], y=[f"f{i}" for i in range(cfg.n_features)],
    )
)
# Half a page wide: a title of two short lines, so it is not cut off.
heat.update_layout(
    title={"text": f"WᵀW at p = {probs[level]:.3g}<br><sup>diagonal: how well each feature is kept</sup><br>"
                   "<sup>off-diagonal: how much two features interfere</sup>"},
    yaxis={"autorange": "reversed", "scaleanchor": "x"}, height=440, margin={"t": 90, "b": 10},
)
left.plotly_chart(heat, key="toy_gram")

bars = go.Figure(
    go.Bar(
        y=[f"feature {i}" for i in range(cfg.n_features)], x=stats.norms[level].tolist(), orientation="h",
        marker={"color": stats.superposition[level].tolist(), "colorscale": "Viridis", "cmin": 0,
                "colorbar": {"title": "superposition"}},
        hovertemplate="%{y}: norm %{x:.2f}<extra></extra>",
    )
)
# Plotly draws no TeX: sub/superscripts as its own HTML tags.
bars.update_layout(
    title={"text": "‖W<sub>i</sub>‖ per feature<br><sup>coloured by its superposition "
                   "Σ<sub>j≠i</sub> (Ŵ<sub>i</sub>·W<sub>j</sub>)²</sup>"},
    xaxis_title="column norm",
    yaxis={"autorange": "reversed"}, height=440, margin={"t": 90, "b": 10},
)
bars.add_vline(x=REPRESENTED_NORM, line_dash="dot")
# Above the plotting area (paper y = 1, anchored at its bottom), so it never sits on a bar.
bars.add_annotation(
    x=REPRESENTED_NORM, xref="x", y=1, yref="paper", yanchor="bottom", xanchor="left", showarrow=False,
    text=f"represented (‖W<sub>i</sub>‖ > {REPRESENTED_NORM:g}) →",
)
right.plotly_chart(bars, key="toy_bars")

sweep_table = pd.DataFrame(
    {
        "feature probability": probs,
        "features represented": stats.n_represented.tolist(),
        "dimensions per feature": stats.dimensions_per_feature.tolist(),
        "dimensionality of a represented feature": stats.mean_dimensionality.tolist(),
        "mean output bias": result.b.mean(dim=1).tolist(),
        "loss": result.loss.tolist(),
    }
)
st.dataframe(sweep_table.style.format(precision=3), hide_index=True, key="toy_table")
st.caption(
    "Dimensions per feature = hidden neurons / ‖W‖²_F (the paper's D*): 1 when each represented feature has "
    "its own neuron, 2/5 for a pentagon of unit-length features; trained features are often a little longer, "
    "which lowers it. Dimensionality of a represented feature = the mean of the paper's D_i = ‖W_i‖² / "
    "Σ_j (Ŵ_i·W_j)² over them: the share of a dimension each gets, whatever the lengths (2/5 for any "
    "regular pentagon). A feature counts as represented when ‖W_i‖ > 0.5."
)

# --- SAEs ---------------------------------------------------------------------------------------
st.header("Sparse autoencoders: finding the directions again")
st.markdown(
    "A sparse autoencoder (SAE) maps an activation `h` into a much wider space, asks that only a few of "
    "its latents be non-zero, and maps back:"
)
st.latex(r"z = \mathrm{ReLU}\big(W_{enc}(h - b_{dec}) + b_{enc}\big)")
st.latex(r"\hat{h} = W_{dec}\, z + b_{dec}")
st.markdown(
    "trained to reconstruct `h` while keeping `z` sparse: over a batch of activations, with λ the L1 "
    "coefficient, SAELens's standard SAE minimises"
)
st.latex(r"L = \mathbb{E}_h\Big[\,\lVert \hat{h} - h \rVert_2^2 \;+\; \lambda \sum_k z_k\, \lVert W_{dec,k} \rVert_2\Big]")
st.markdown(
    "The first term is the reconstruction error, summed over the activation's dimensions. The second is "
    "the L1 norm of `z`, each latent weighted by the length of its decoder row `W_dec,k`, so the penalty "
    "cannot be dodged by shrinking `z` and lengthening the row; with unit-length rows it is plain `‖z‖₁`."
)
st.markdown(
    """
If the model stores sparse features as directions in superposition, the sparsest explanation of `h` is
those features themselves: each row of `W_dec` should become one feature's direction, and `z` tells which
features are present and how strongly.

**JumpReLU.** The L1 penalty has a side effect: it pushes *every* activation towards zero, so the SAE
under-reports how strongly a feature is present (shrinkage), and it cannot tell "small but present" from
noise. A JumpReLU replaces the ReLU with a per-latent threshold θ:
"""
)
st.latex(r"\mathrm{JumpReLU}_\theta(u) = u \cdot H(u - \theta)")
st.markdown(
    """
where H is the step function: a latent is either off or passes its full value. Sparsity is then
penalised by counting active latents (L0) rather than by their size, with a straight-through estimator
to learn θ. Latents behave more like on/off feature detectors and their magnitudes are not shrunk, which
is why the SAEs in this app use it.
"""
)

st.subheader("Live: a tiny SAE on the toy model's hidden activations")
s1, s2, s3 = st.columns(3)
d_sae = s1.slider("SAE latents", 1, 4 * LIMITS.max_toy_features, SAE_DEFAULTS.d_sae, key="toy_sae_d")
l1 = s2.select_slider(
    "L1 coefficient", [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], SAE_DEFAULTS.l1_coefficient, key="toy_sae_l1",
    help="Too small: latents blend neighbouring features. Too large: latents die.",
)
sae_level = s3.select_slider(
    "Train on sparsity level", options=list(range(len(probs))), value=len(probs) - 1,
    format_func=lambda i: f"p = {probs[i]:.3g}", key="toy_sae_level",
)
try:
    sae_cfg = ToySAEConfig(level=int(sae_level), d_sae=int(d_sae), l1_coefficient=float(l1), seed=int(seed),
                           steps=SAE_DEFAULTS.steps)
    sae = toy_sae(cfg, sae_cfg)
except LatentLabError as err:
    show_error(err)
    st.stop()

m1, m2, m3 = st.columns(3)
m1.metric("Variance explained", f"{sae.explained_variance:.1%}")
m2.metric("L0: latents firing per input", f"{sae.l0:.2f}",
          help="Averaged over held-out inputs with at least one feature on; at this sparsity most inputs "
               "are all zero, and nothing fires on them.")
m3.metric("Dead latents", f"{int((sae.frequency == 0).sum())} / {d_sae}")

left, right = st.columns(2)
cos = go.Figure(
    go.Heatmap(
        z=sae.cosine.tolist(), zmin=-1, zmax=1, colorscale="RdBu", zmid=0,
        x=[f"feature {i}" for i in range(cfg.n_features)], y=[f"latent {k}" for k in range(d_sae)],
        hovertemplate="%{y} vs %{x}: cos %{z:.3f}<extra></extra>",
    )
)
cos.update_layout(
    title="Cosine similarity: SAE decoder rows vs planted feature directions",
    yaxis={"autorange": "reversed"}, height=max(300, 22 * d_sae + 120), margin={"t": 50, "b": 10},
)
left.plotly_chart(cos, key="toy_sae_cos")
if cfg.n_hidden == 2:
    overlay = go.Figure()
    for i in range(cfg.n_features):
        x, y = result.W[sae_level, :, i].tolist()
        overlay.add_trace(
            go.Scatter(x=[0, x], y=[0, y], mode="lines+markers", line={"color": colours[i], "width": 4},
                       marker={"size": [0, 10]}, name=f"feature {i}")
        )
    reach = max(1.2, float(stats.norms[sae_level].max()) * 1.1)
    for k in range(d_sae):
        if sae.frequency[k] == 0:
            continue
        x, y = (sae.W_dec[k] / sae.W_dec[k].norm() * reach * 0.95).tolist()
        overlay.add_trace(
            go.Scatter(x=[0, x], y=[0, y], mode="lines", line={"color": "grey", "dash": "dash", "width": 1.5},
                       name=f"latent {k}", showlegend=False, hovertemplate=f"latent {k}<extra></extra>")
        )
    overlay.update_layout(
        title="Features (arrows) and live SAE latent directions (dashed)",
        xaxis={"range": [-reach, reach]}, yaxis={"range": [-reach, reach], "scaleanchor": "x"},
        height=max(300, 22 * d_sae + 120), margin={"t": 50, "b": 10},
    )
    right.plotly_chart(overlay, key="toy_sae_overlay")
st.caption(
    "With the defaults every planted feature has a latent at cosine ≈ 1: the SAE, seeing only the "
    "2-dimensional hidden activations, recovers the five directions the toy model packed into them. "
    "This SAE is SAELens's standard ReLU + L1 SAE, trained on exactly the loss above."
)
