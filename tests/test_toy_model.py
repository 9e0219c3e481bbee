"""The toy model reproduces the paper's qualitative result with its defaults; the measures match naive loops."""

import math

import pytest
import torch

from sae_lib.errors import InputError
from sae_lib.limits import LIMITS
from sae_lib.toy_model import (
    ToyConfig,
    ToyModel,
    analyse,
    gram,
    neighbour_angles,
    sample_features,
    train_toy,
    weighted_loss,
)
from sae_lib.toy_sae import ToySAEConfig, train_toy_sae


@pytest.fixture(scope="module")
def sweep():
    """The default sweep (5 features, 2 neurons, 10 levels from p=1 to p=0.05), seed 0."""
    return train_toy(ToyConfig())


@pytest.fixture(scope="module")
def sweep_analysis(sweep):
    return analyse(sweep.W)


def _pentagon(scale: float = 1.0) -> torch.Tensor:
    angles = torch.arange(5) * 2 * math.pi / 5
    return scale * torch.stack([angles.cos(), angles.sin()])  # (2, 5)


# --- the paper's result with the defaults ----------------------------------------------------


@pytest.mark.slow
def test_dense_keeps_the_two_most_important_features_orthogonal(sweep, sweep_analysis):
    assert sweep.feature_probability[0].item() == pytest.approx(1.0)
    norms = sweep_analysis.norms[0]
    torch.testing.assert_close(norms[:2], torch.ones(2), atol=0.1, rtol=0)
    assert (norms[2:] < 0.2).all(), norms
    w0, w1 = sweep.W[0, :, 0], sweep.W[0, :, 1]
    assert abs(torch.dot(w0, w1) / (w0.norm() * w1.norm())) < 0.1
    torch.testing.assert_close(sweep_analysis.superposition[0, :2], torch.zeros(2), atol=0.02, rtol=0)


@pytest.mark.slow
def test_sparse_represents_all_five_as_a_pentagon_with_negative_biases(sweep, sweep_analysis):
    assert sweep.feature_probability[-1].item() == pytest.approx(0.05)
    norms = sweep_analysis.norms[-1]
    assert ((norms > 0.85) & (norms < 1.3)).all(), norms
    angles = neighbour_angles(sweep.W[-1])
    torch.testing.assert_close(angles, torch.full((5,), 72.0), atol=8.0, rtol=0)
    assert (sweep.b[-1] < 0).all(), sweep.b[-1]
    # A pentagon packs 5 features into 2 dimensions: about 2/5 of a dimension each (norms ~1.1 lower it).
    assert 0.25 < sweep_analysis.dimensions_per_feature[-1].item() < 0.45


@pytest.mark.slow
def test_represented_features_grow_with_sparsity(sweep, sweep_analysis):
    counts = sweep_analysis.n_represented.tolist()
    assert counts[0] == 2 and counts[-1] == 5, counts
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert len(set(counts)) >= 3, counts  # something really happens in between
    # Dimensions per feature fall from 1 (each feature its own neuron) as superposition sets in.
    dpf = sweep_analysis.dimensions_per_feature
    assert dpf[0].item() == pytest.approx(1.0, abs=0.05)
    assert dpf[-1] < dpf[0] / 2


# --- the measures against naive references ----------------------------------------------------


def test_analyse_matches_naive_loops():
    W = torch.randn(3, 4, 7)  # (level, hidden, feature): awkward sizes on purpose
    W[1, :, 2] = 0.0  # a dropped feature must not produce NaNs
    got = analyse(W)
    for lvl in range(3):
        total_sq = sum(W[lvl, :, j].square().sum() for j in range(7))
        assert got.dimensions_per_feature[lvl].item() == pytest.approx(4 / total_sq.item(), rel=1e-5)
        for i in range(7):
            wi = W[lvl, :, i]
            norm = wi.norm()
            assert got.norms[lvl, i].item() == pytest.approx(norm.item(), abs=1e-6)
            unit = wi / norm if norm > 0 else torch.zeros_like(wi)
            sup = sum(torch.dot(unit, W[lvl, :, j]) ** 2 for j in range(7) if j != i)
            assert got.superposition[lvl, i].item() == pytest.approx(float(sup), rel=1e-5, abs=1e-6)
            all_sq = sum(torch.dot(unit, W[lvl, :, j]) ** 2 for j in range(7))
            dim = (norm**2 / all_sq).item() if norm > 0 else 0.0
            assert got.feature_dimensionality[lvl, i].item() == pytest.approx(dim, rel=1e-5, abs=1e-6)
            assert got.represented[lvl, i].item() == (norm.item() > 0.5)
    assert not torch.isnan(got.superposition).any()
    torch.testing.assert_close(gram(W)[2], W[2].T @ W[2])


def test_analyse_known_geometries():
    pentagon = _pentagon()[None]  # (1, 2, 5)
    got = analyse(pentagon)
    # Each unit feature overlaps its 4 neighbours: 2 cos^2(72) + 2 cos^2(144) = 1.5.
    expected = 2 * math.cos(math.radians(72)) ** 2 + 2 * math.cos(math.radians(144)) ** 2
    torch.testing.assert_close(got.superposition[0], torch.full((5,), expected))
    torch.testing.assert_close(got.feature_dimensionality[0], torch.full((5,), 0.4))
    assert got.dimensions_per_feature.item() == pytest.approx(0.4)
    assert got.mean_dimensionality.item() == pytest.approx(0.4)
    # Longer features (as trained ones often are): D* falls with the squared length, the mean D_i does not.
    longer = analyse(1.13 * pentagon)
    assert longer.dimensions_per_feature.item() == pytest.approx(0.4 / 1.13**2)
    assert longer.mean_dimensionality.item() == pytest.approx(0.4)
    none = analyse(torch.zeros(1, 2, 5))  # nothing represented: 0, not NaN
    assert none.mean_dimensionality.item() == 0.0
    orthogonal = torch.eye(3)[None]  # 3 features, 3 neurons, no superposition
    got = analyse(orthogonal)
    torch.testing.assert_close(got.superposition[0], torch.zeros(3))
    torch.testing.assert_close(got.feature_dimensionality[0], torch.ones(3))
    assert got.dimensions_per_feature.item() == pytest.approx(1.0)


def test_neighbour_angles_go_once_round_in_angular_order():
    shuffled = _pentagon(2.0)[:, [3, 0, 4, 1, 2]]
    torch.testing.assert_close(neighbour_angles(shuffled), torch.full((5,), 72.0), atol=1e-3, rtol=0)
    right_angle = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    torch.testing.assert_close(neighbour_angles(right_angle), torch.tensor([90.0, 270.0]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError):
        neighbour_angles(torch.randn(3, 4))


def test_model_and_loss_match_per_instance_reference():
    gen = torch.Generator().manual_seed(1)
    model = ToyModel(n_instances=3, n_features=6, n_hidden=2, generator=gen)
    with torch.no_grad():
        model.b.normal_()
    prob = torch.tensor([1.0, 0.5, 0.1])
    x = sample_features(prob, 16, 6, gen)  # (3, 16, 6)
    importance = 0.8 ** torch.arange(6.0)
    out = model(x)
    for i in range(3):
        W, b = model.W[i], model.b[i]
        ref = torch.relu(x[i] @ W.T @ W + b)  # ReLU(W^T W x + b), row-vector form
        torch.testing.assert_close(out[i], ref)
        ref_loss = (importance * (x[i] - ref) ** 2).mean()
        torch.testing.assert_close(weighted_loss(x, out, importance)[i], ref_loss)


def test_sample_features_are_uniform_with_the_given_probability():
    gen = torch.Generator().manual_seed(0)
    x = sample_features(torch.tensor([1.0, 0.3, 0.05]), 20000, 4, gen)
    on = (x > 0).float().mean(dim=(1, 2))
    torch.testing.assert_close(on, torch.tensor([1.0, 0.3, 0.05]), atol=0.01, rtol=0)
    assert x.min() >= 0 and x.max() <= 1
    assert x[0].mean().item() == pytest.approx(0.5, abs=0.01)  # uniform on [0, 1]


def test_feature_probability_and_importance():
    cfg = ToyConfig()
    p = cfg.feature_probability()
    assert len(p) == 10
    assert p[0].item() == pytest.approx(1.0) and p[-1].item() == pytest.approx(0.05)
    ratios = p[1:] / p[:-1]
    torch.testing.assert_close(ratios, torch.full((9,), ratios[0].item()))  # geometric
    torch.testing.assert_close(cfg.importance(), torch.tensor([0.9**i for i in range(5)]))
    assert ToyConfig(n_levels=1, min_probability=0.2, max_probability=0.2).feature_probability().tolist() == [
        pytest.approx(0.2)
    ]


def test_training_is_seeded_and_leaves_global_rng_alone():
    cfg = ToyConfig(steps=30, n_levels=3, n_hidden=3, n_features=6)
    torch.manual_seed(123)
    a = train_toy(cfg)
    after = torch.rand(1)
    torch.manual_seed(123)
    b = train_toy(cfg)
    torch.testing.assert_close(torch.rand(1), after)  # train_toy drew nothing from the global RNG
    torch.testing.assert_close(a.W, b.W)
    assert a.W.shape == (3, 3, 6) and a.b.shape == (3, 6) and a.loss.shape == (3,)
    c = train_toy(ToyConfig(steps=30, n_levels=3, n_hidden=3, n_features=6, seed=1))
    assert not torch.equal(a.W, c.W)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_features": 0}, "features"),
        ({"n_features": LIMITS.max_toy_features + 1}, "features"),
        ({"n_hidden": 5}, "fewer than the features"),
        ({"n_hidden": 7}, "fewer than the features"),
        ({"min_probability": 0.5, "max_probability": 0.1}, "smaller probability on the sparse end"),
        ({"min_probability": 0.0}, "0 < sparsest"),
        ({"min_probability": 0.3, "max_probability": 0.3}, "range is empty"),
        ({"steps": 0}, "steps"),
        ({"steps": LIMITS.max_toy_steps + 1}, "steps"),
        ({"importance_decay": 0.0}, "decay"),
        ({"n_levels": LIMITS.max_toy_levels + 1}, "levels"),
    ],
)
def test_nonsense_parameters_are_refused_with_a_message(kwargs, words):
    with pytest.raises(InputError, match=words):
        ToyConfig(**kwargs)


# --- the tiny SAE ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sae_latents_line_up_with_the_planted_features(sweep):
    got = train_toy_sae(sweep, ToySAEConfig())
    assert got.cosine.shape == (10, 5)
    # Every planted feature has a latent pointing its way...
    assert (got.cosine.max(dim=0).values > 0.95).all(), got.cosine
    # ...and every live latent points at one feature, not a blend of neighbours.
    alive = got.frequency > 0
    assert alive.sum() >= 5
    assert (got.cosine[alive].max(dim=1).values > 0.95).all(), got.cosine
    assert got.explained_variance > 0.8
    assert got.l0 < 3.0  # 10 latents, but only a couple fire per sample
    # The cosines are those of the returned weights with the toy's feature directions.
    dec = got.W_dec / got.W_dec.norm(dim=1, keepdim=True)
    feat = sweep.W[-1] / sweep.W[-1].norm(dim=0, keepdim=True)
    torch.testing.assert_close(got.cosine, dec @ feat)


@pytest.mark.slow
def test_sae_on_a_bad_level_is_refused(sweep):
    with pytest.raises(InputError, match="does not exist"):
        train_toy_sae(sweep, ToySAEConfig(level=10, steps=1))
    with pytest.raises(InputError):
        ToySAEConfig(d_sae=0)


def test_the_theory_pages_sae_loss_is_saelens_training_loss():
    """The Theory page states the loss its SAE trains on: E[ ||h_hat - h||^2 + lambda sum_k z_k ||W_dec,k|| ].
    Checked against SAELens's training_forward_pass with decoder rows of unequal length (where plain
    ||z||_1 would differ)."""
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig

    torch.manual_seed(0)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=3, d_sae=8, l1_coefficient=0.3))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 8)[:, None])
        sae.b_enc.fill_(0.1)
    h = torch.randn(16, 3)
    out = sae.training_forward_pass(TrainStepInput(sae_in=h, coefficients={"l1": 0.3}, dead_neuron_mask=None,
                                                   n_training_steps=0, is_logging_step=False))
    with torch.no_grad():
        z = torch.relu((h - sae.b_dec) @ sae.W_enc + sae.b_enc)  # (16, 8)
        h_hat = z @ sae.W_dec + sae.b_dec  # (16, 3)
        page = ((h_hat - h) ** 2).sum(-1).mean() + 0.3 * (z * sae.W_dec.norm(dim=1)).sum(-1).mean()
        plain_l1 = ((h_hat - h) ** 2).sum(-1).mean() + 0.3 * z.sum(-1).mean()
    assert out.loss.item() == pytest.approx(page.item(), rel=1e-5)
    assert abs(out.loss.item() - plain_l1.item()) > 1e-3  # the decoder-norm weighting matters here
