"""vMF loss (normaliser, gradients, large kappa) and the hit networks (padding, permutation invariance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from numl.metrics import angular_error_deg, gaussian_nll
from numl.models.edgeconv import DynEdge
from numl.models.hit_transformer import HitTransformer
from numl.tasks.km3net import KM3NeTRecoTask
from numl.tasks.losses import log_vmf_normaliser_3d, vmf_angle_cdf, vmf_nll_3d
from numl.utils.errors import ConfigError


@pytest.mark.parametrize("kappa", [1e-4, 0.3, 5.0, 200.0, 1e4])
def test_vmf_density_integrates_to_one(kappa):
    log_c = float(log_vmf_normaliser_3d(torch.tensor(kappa, dtype=torch.float64)))
    # integrate 2 pi C3 exp(kappa cos(theta)) over cos(theta) in [-1, 1], in y = kappa (1 - cos(theta)) so the
    # peak of width 1 / kappa is resolved for any kappa; beyond y = 60 the mass is below exp(-60)
    total, _ = quad(lambda y: 2 * math.pi * math.exp(log_c + kappa - y) / kappa, 0.0, min(2.0 * kappa, 60.0),
                    limit=200)
    assert total == pytest.approx(1.0, rel=1e-6)


def test_vmf_normaliser_matches_closed_form_and_uniform_limit():
    kappa = torch.tensor([1e-8, 1e-3, 0.5, 3.0, 30.0], dtype=torch.float64)
    exact = torch.log(kappa / (4 * math.pi * torch.sinh(kappa)))
    torch.testing.assert_close(log_vmf_normaliser_3d(kappa), exact, rtol=1e-10, atol=1e-12)
    assert float(log_vmf_normaliser_3d(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(-math.log(4 * math.pi))


def test_vmf_gradients_match_analytic_and_stay_finite_for_large_kappa():
    # d/dkappa of the NLL is coth(kappa) - 1/kappa - mu.t
    direction = torch.tensor([[0.0, 0.0, 1.0]] * 4)
    target = torch.nn.functional.normalize(torch.tensor([[0.1, 0.0, 1.0]] * 4), dim=-1)
    kappa = torch.tensor([1e-3, 1.0, 1e3, 1e7], requires_grad=True)
    vmf_nll_3d(direction, kappa, target).sum().backward()
    k = kappa.detach().double()
    analytic = 1 / torch.tanh(k) - 1 / k - float(target[0, 2])
    assert torch.all(torch.isfinite(kappa.grad))
    torch.testing.assert_close(kappa.grad.double(), analytic, rtol=2e-3, atol=2e-3)
    loss_large = vmf_nll_3d(direction[:1], torch.tensor([1e30]), direction[:1])
    assert torch.isfinite(loss_large).all()


def test_vmf_gradcheck_in_double():
    direction = torch.nn.functional.normalize(torch.randn(3, 3, dtype=torch.float64), dim=-1).requires_grad_()
    kappa = torch.tensor([0.005, 2.0, 80.0], dtype=torch.float64, requires_grad=True)
    target = torch.nn.functional.normalize(torch.randn(3, 3, dtype=torch.float64), dim=-1)
    assert torch.autograd.gradcheck(lambda d, k: vmf_nll_3d(d, k, target), (direction, kappa))


def test_vmf_angle_cdf_is_uniform_for_samples_of_the_distribution():
    # sample vMF angles by inverting the CDF of cos(theta): w = 1 + log(u + (1 - u) exp(-2k)) / k
    kappa = 50.0
    u = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
    cdf = vmf_angle_cdf(torch.arccos(w), torch.tensor(kappa, dtype=torch.float64))
    assert float((cdf <= 0.68).double().mean()) == pytest.approx(0.68, abs=0.015)


def test_gaussian_nll_minimum_at_the_true_sigma():
    target = torch.randn(50000, generator=torch.Generator().manual_seed(1)) * 0.3
    sigmas = torch.tensor([0.1, 0.3, 0.9])
    losses = [float(gaussian_nll(torch.zeros_like(target), torch.log(s).expand_as(target), target).mean())
              for s in sigmas]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def _padded_batch(n_hits=(12, 5, 30), n_features=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_max = max(n_hits)
    features = torch.zeros(len(n_hits), n_max, n_features)
    mask = torch.zeros(len(n_hits), n_max, dtype=torch.bool)
    for i, n in enumerate(n_hits):
        features[i, :n] = torch.randn(n, n_features, generator=g)
        mask[i, :n] = True
    return features, mask


@pytest.mark.parametrize("model_cls", [DynEdge, HitTransformer])
def test_models_ignore_padding_and_hit_order(model_cls):
    torch.manual_seed(0)
    task = KM3NeTRecoTask(model_cls()).eval()  # the backbone's embedding through the task's head
    features, mask = _padded_batch()

    def model(hit_features, hit_mask):
        return task({"hit_features": hit_features, "hit_mask": hit_mask})

    with torch.no_grad():
        embedding = task.model(features, mask)
        out = model(features, mask)
        # more padding and garbage in the padded slots must not change anything
        extra = torch.cat([features, torch.randn(3, 7, 12)], dim=1)
        out_padded = model(extra, torch.cat([mask, torch.zeros(3, 7, dtype=torch.bool)], dim=1))
        perm = torch.randperm(30)
        out_perm = model(features[2:, perm], mask[2:, perm])
    assert embedding.shape == (3, task.model.embedding_dim)
    assert out["direction"].shape == (3, 3) and out["kappa"].shape == (3,)
    torch.testing.assert_close(out["direction"].norm(dim=-1), torch.ones(3))
    assert torch.all(out["kappa"] > 0)
    for key in ("direction", "kappa", "log10_energy"):
        torch.testing.assert_close(out[key], out_padded[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[key][2:], out_perm[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model_cls", [DynEdge, HitTransformer])
def test_models_learn_a_direction_from_hit_times(model_cls):
    # Hits along a line, time = distance along it: the network must learn the line direction.
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(128, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    s = rng.uniform(-1, 1, size=(128, 12))
    pos = s[..., None] * directions[:, None, :] + 0.05 * rng.normal(size=(128, 12, 3))
    features = np.zeros((128, 12, 12), dtype=np.float32)
    features[..., :3], features[..., 6] = pos, s
    features[..., 9:12] = pos - pos.mean(axis=1, keepdims=True)  # the event-centred columns
    x, mask, target = torch.tensor(features), torch.ones(128, 12, dtype=torch.bool), torch.tensor(directions).float()
    backbone = model_cls(hidden=32, k=4) if model_cls is DynEdge else model_cls(d_model=32, n_layers=2)
    task = KM3NeTRecoTask(backbone)

    def model(hit_features, hit_mask):
        return task({"hit_features": hit_features, "hit_mask": hit_mask})

    # 3e-3 makes the transformer diverge on this batch (median 72 deg); it learns the lines at 1e-3 (2 deg)
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3 if model_cls is DynEdge else 1e-3)
    for _ in range(200):
        out = model(x, mask)
        loss = vmf_nll_3d(out["direction"], out["kappa"], target).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        cos = (model(x, mask)["direction"] * target).sum(-1)
    assert float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).median()) < 20.0


def test_spacetime_features_are_looked_up_by_name():
    torch.manual_seed(0)
    features, mask = _padded_batch()
    default = DynEdge().eval()
    # x, y, z, light_time are columns 0, 1, 2, 6 of numl.sim.km3net.features.HIT_FEATURES
    assert default.spacetime_columns == [0, 1, 2, 6]
    shuffled = DynEdge(spacetime_features=["light_time", "z", "x", "y"]).eval()
    shuffled.load_state_dict(default.state_dict())
    with torch.no_grad():  # the same k-NN graph: distances do not depend on the order of the coordinates
        torch.testing.assert_close(shuffled(features, mask), default(features, mask))
        other = DynEdge(spacetime_features=["x_event", "y_event", "z_event"]).eval()
        other.load_state_dict(default.state_dict())
        assert not torch.allclose(other(features, mask), default(features, mask))
    with pytest.raises(ConfigError, match=r"model.spacetime_features=\['x', 'time'\]: unknown hit feature time"):
        DynEdge(spacetime_features=["x", "time"])


def test_kappa_scale_recovers_a_miscalibrated_concentration():
    from numl.tasks.km3net import fit_kappa_scale

    rng = np.random.default_rng(5)
    true_kappa = rng.uniform(20, 2000, 20000)
    u = rng.uniform(size=true_kappa.size)
    cos = 1 + np.log(u + (1 - u) * np.exp(-2 * true_kappa)) / true_kappa  # inverse CDF of the vMF angle
    error_deg = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    scale = fit_kappa_scale(3.0 * true_kappa, error_deg)  # a network three times over-confident
    assert scale == pytest.approx(1 / 3, rel=0.03)
    coverage = vmf_angle_cdf(torch.deg2rad(torch.tensor(error_deg)), torch.tensor(scale * 3.0 * true_kappa))
    assert float((coverage <= 0.68).double().mean()) == pytest.approx(0.68, abs=0.01)


class _LineEvents(torch.utils.data.Dataset):
    """Padded hit sets with a direction and an energy: enough for the task's loop and its kappa calibration."""

    def __init__(self, n: int, seed: int) -> None:
        self.features, self.mask = _padded_batch(tuple(range(5, 5 + n)), seed=seed)
        g = torch.Generator().manual_seed(seed)
        self.direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
        self.log10_energy = torch.rand(n, generator=g) + 2

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i):
        return {"hit_features": self.features[i], "hit_mask": self.mask[i], "direction": self.direction[i],
                "log10_energy": self.log10_energy[i]}


def test_task_fits_kappa_scale_on_the_validation_events():
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from numl.tasks.km3net import fit_kappa_scale

    pl.seed_everything(0, verbose=False)
    task = KM3NeTRecoTask(DynEdge(hidden=8, k=3), lambda params: torch.optim.Adam(params, lr=1e-3), head_hidden=8)
    val = _LineEvents(24, seed=1)
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(task, DataLoader(_LineEvents(16, seed=0), batch_size=8),
                                               DataLoader(val, batch_size=8))
    with torch.no_grad():
        out = task.eval()({"hit_features": val.features, "hit_mask": val.mask})
    expected = fit_kappa_scale(out["kappa"].numpy(), angular_error_deg(out["direction"], val.direction).numpy())
    assert float(task.kappa_scale) == pytest.approx(expected, rel=1e-4) and float(task.kappa_scale) != 1.0
    predictions = task.predictions(out, {"direction": val.direction})
    torch.testing.assert_close(predictions["kappa_calibrated"], out["kappa"] * task.kappa_scale)


@pytest.mark.parametrize("name, event_types", [("track", (0, 2)), ("atmospheric_muon", (4, 0))])
def test_class_head_adds_its_cross_entropy_and_learns_the_class(name, event_types):
    # Events of the class carry a marker in their first feature; the head must learn it, and the loss must be the
    # direction + energy loss plus <name>_weight times the binary cross-entropy of the class logit.
    torch.manual_seed(0)
    features, mask = _padded_batch(n_hits=tuple(range(5, 37)), seed=3)
    event_type = torch.tensor(list(event_types) * 16)
    in_class = event_type == event_types[0]
    features[in_class, :, 0] += 3.0 * mask[in_class]
    batch = {"hit_features": features, "hit_mask": mask, "event_type": event_type,
             "direction": torch.nn.functional.normalize(torch.randn(32, 3), dim=-1),
             "log10_energy": torch.rand(32) + 1}
    task = KM3NeTRecoTask(DynEdge(hidden=16, k=3), head_hidden=16, **{f"{name}_weight": 2.0})
    out = task(batch)
    without_track = vmf_nll_3d(out["direction"], out["kappa"], batch["direction"]).mean() + gaussian_nll(
        out["log10_energy"], out["log10_energy_log_sigma"], batch["log10_energy"]).mean()
    cross_entropy = torch.nn.functional.binary_cross_entropy_with_logits(out[f"{name}_logit"], in_class.float())
    torch.testing.assert_close(task.compute_loss(out, batch), without_track + 2.0 * cross_entropy)
    optimizer = torch.optim.Adam(task.parameters(), lr=3e-3)
    for _ in range(60):
        loss = task.compute_loss(task(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predictions = task.predictions(task(batch), batch)
    probability = predictions[f"{name}_probability"]
    assert float(probability[in_class].min()) > float(probability[~in_class].max())
    assert f"{name}_auroc" in task.metrics["val_metrics"] and f"{name}_auroc" in task.metrics["test_metrics"]
    assert len(task.class_weights) == 1  # the other head is not built


def test_without_track_weight_the_task_has_no_track_head():
    task = KM3NeTRecoTask(DynEdge(hidden=8, k=3), head_hidden=8)
    assert not hasattr(task, "track_head") and "track_auroc" not in task.metrics["val_metrics"]
    features, mask = _padded_batch()
    with torch.no_grad():
        out = task({"hit_features": features, "hit_mask": mask})
    assert "track_logit" not in out


def test_track_head_refuses_bad_weight_and_batches_without_event_type():
    with pytest.raises(ConfigError, match="task.track_weight=-1"):
        KM3NeTRecoTask(DynEdge(hidden=8, k=3), track_weight=-1.0)
    with pytest.raises(ConfigError, match="task.atmospheric_muon_weight=-1"):
        KM3NeTRecoTask(DynEdge(hidden=8, k=3), atmospheric_muon_weight=-1.0)
    task = KM3NeTRecoTask(DynEdge(hidden=8, k=3), head_hidden=8, track_weight=1.0)
    features, mask = _padded_batch()
    batch = {"hit_features": features, "hit_mask": mask, "direction": torch.tensor([[0.0, 0.0, 1.0]] * 3),
             "log10_energy": torch.ones(3)}
    with pytest.raises(ConfigError, match="no event_type"):
        task.compute_loss(task(batch), batch)


def test_track_auroc_is_nan_for_one_class_and_exact_for_two():
    from torchmetrics.functional.classification import binary_auroc

    from numl.metrics import BinaryAUROCOrNaN

    metric = BinaryAUROCOrNaN()
    metric.update(torch.tensor([0.2, 0.9, 0.4]), torch.tensor([0, 0, 0]))
    assert torch.isnan(metric.compute())  # torchmetrics' own BinaryAUROC returns 0 here
    metric.reset()
    scores, labels = torch.tensor([0.2, 0.9, 0.4, 0.7]), torch.tensor([0, 1, 1, 0])
    metric.update(scores, labels)
    assert float(metric.compute()) == pytest.approx(float(binary_auroc(scores, labels))) == pytest.approx(0.75)
