"""Voids vs clusters: kappa-binned attribution and the masking experiment, on maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.stats import norm
from torch import nn

from numl.explain.attribution import AttributionConfig, attribute
from numl.explain.lensing import (
    check_lensing_task,
    kappa_binned_attribution,
    mask_maps,
    masking_experiment,
    save_kappa_binned_figure,
    save_masking_figure,
    standardised_kappa,
)
from numl.tasks.classification import BinaryClassificationTask
from numl.utils.errors import ConfigError

N_PIX = 48


def gaussian_field(n: int, seed: int, smoothing_pix: float = 2.0) -> torch.Tensor:
    """Smoothed white noise, periodic: a stand-in Gaussian convergence field [n, 1, N, N]."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((n, 1, N_PIX, N_PIX))
    return torch.as_tensor(gaussian_filter(white, sigma=(0, 0, smoothing_pix, smoothing_pix), mode="wrap")).float()


def add_halos(maps: torch.Tensor, labels: torch.Tensor, sign: float, seed: int) -> torch.Tensor:
    """Class 1 gets three compact haloes (sign +1) or voids (sign -1) at random places, 5 sigma deep."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(N_PIX, dtype=torch.float32)
    cy, cx = torch.randint(0, N_PIX, (2, len(maps), 3, 1, 1), generator=g).float()
    r2 = (grid[:, None] - cy) ** 2 + (grid[None, :] - cx) ** 2  # [n, 3, N, N]
    halos = torch.exp(-r2 / (2 * 1.5**2)).sum(1, keepdim=True)
    return maps + sign * 5 * maps.std() * labels[:, None, None, None] * halos


class ExtremeDetector(nn.Module):
    """Logit from the highest (peaks) or the lowest (voids) pixel of the map: a detector of known habits."""

    def __init__(self, looks_at: str, threshold: float) -> None:
        super().__init__()
        self.sign = 1.0 if looks_at == "peaks" else -1.0
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.threshold = threshold

    def forward(self, maps):
        return 4.0 * (self.pool(self.sign * maps).flatten(1) - self.threshold)


def detector_task(looks_at: str, threshold: float) -> BinaryClassificationTask:
    return BinaryClassificationTask(ExtremeDetector(looks_at, threshold), input_key="convergence_map").eval()


def dataset(sign: float, n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % 2
    maps = add_halos(gaussian_field(n, seed), labels, sign, seed + 1)
    return maps / maps.std(), labels


def threshold_between_classes(maps: torch.Tensor, labels: torch.Tensor, sign: float) -> float:
    extreme = (sign * maps).flatten(1).amax(1)
    return float((extreme[labels == 0].median() + extreme[labels == 1].median()) / 2)


# ----- binning --------------------------------------------------------------------------------
def test_standardised_kappa_has_zero_mean_unit_variance_per_map():
    maps = 3.0 * gaussian_field(4, seed=1) + 0.5
    nu = standardised_kappa(maps)
    torch.testing.assert_close(nu.mean((2, 3)), torch.zeros(4, 1, dtype=nu.dtype), atol=1e-10, rtol=0)
    torch.testing.assert_close(nu.std((2, 3)), torch.ones(4, 1, dtype=nu.dtype), atol=1e-10, rtol=0)


def test_pixel_shares_of_a_gaussian_field_follow_the_normal_distribution():
    maps = gaussian_field(64, seed=2, smoothing_pix=1.0)
    edges = (-np.inf, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, np.inf)
    binned = kappa_binned_attribution(maps, torch.ones_like(maps), edges)
    expected = np.diff(norm.cdf(np.array(edges)))
    np.testing.assert_allclose(binned.pixel_fraction, expected, atol=0.006)
    # Uniform attribution: each bin gets its pixel share, enrichment 1.
    np.testing.assert_allclose(binned.attribution_fraction, binned.pixel_fraction, atol=1e-12)
    np.testing.assert_allclose(binned.enrichment[binned.pixel_fraction > 0], 1.0, atol=1e-9)
    assert binned.fraction_where(-np.inf, 0.0)[1] == pytest.approx(0.5, abs=0.01)


def test_attribution_on_peaks_lands_in_the_peak_bins():
    maps = gaussian_field(8, seed=3)
    nu = standardised_kappa(maps).float()
    attribution = torch.where(nu > 2, torch.randn_like(maps), torch.zeros_like(maps))
    binned = kappa_binned_attribution(maps, attribution, (-np.inf, 0.0, 2.0, np.inf))
    np.testing.assert_allclose(binned.attribution_fraction, [0.0, 0.0, 1.0], atol=1e-12)
    assert binned.labels() == ["[-inf, 0)", "[0, 2)", "[2, inf)"]


@pytest.mark.parametrize(("looks_at", "sign", "bin_index"), [("peaks", 1.0, -1), ("voids", -1.0, 0)])
def test_integrated_gradients_of_a_detector_point_at_its_extremes(looks_at, sign, bin_index):
    maps, labels = dataset(sign, n=16)
    task = detector_task(looks_at, threshold_between_classes(maps, labels, sign))
    maps = maps[labels == 1]
    result = attribute(task, maps, AttributionConfig.from_mapping({"method": "integrated_gradients", "n_steps": 16}))
    binned = kappa_binned_attribution(maps, result.attributions, (-np.inf, -3.0, 0.0, 3.0, np.inf))
    # The max-pool passes gradient to the single most extreme pixel, a halo (void) beyond 3 sigma.
    assert binned.attribution_fraction[bin_index] > 0.95
    assert binned.enrichment[bin_index] > 20


def test_bad_bin_edges_are_refused():
    maps = gaussian_field(1, seed=4)
    with pytest.raises(ConfigError, match="bin_edges_sigma"):
        kappa_binned_attribution(maps, maps, (0.0, 0.0, 1.0))
    binned = kappa_binned_attribution(maps, maps)
    with pytest.raises(ConfigError, match="must both be edges"):
        binned.fraction_where(-0.5, 0.0)


# ----- masking ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["highest", "lowest"])
def test_mask_maps_replaces_exactly_the_extreme_pixels(mode):
    maps = gaussian_field(3, seed=5)
    masked = mask_maps(maps, 0.1, mode, fill="mean")
    k = round(0.1 * N_PIX * N_PIX)
    flat, flat_masked = maps.flatten(1), masked.flatten(1)
    changed = flat != flat_masked
    assert (changed.sum(1) == k).all()
    order = flat.argsort(1, descending=mode == "highest")
    # The changed pixels are the k most extreme ones, now holding the map's mean.
    assert all(set(order[i, :k].tolist()) == set(changed[i].nonzero().reshape(-1).tolist()) for i in range(3))
    torch.testing.assert_close(flat_masked[changed].reshape(3, k), flat.mean(1, keepdim=True).expand(3, k))


def test_mask_maps_random_and_zero_fill_and_no_mask():
    maps = gaussian_field(2, seed=6)
    masked = mask_maps(maps, 0.25, "random", fill="zero", seed=1)
    assert ((masked == 0).flatten(1).sum(1) == round(0.25 * N_PIX * N_PIX)).all()
    assert not torch.equal(masked, mask_maps(maps, 0.25, "random", fill="zero", seed=2))
    torch.testing.assert_close(mask_maps(maps, 0.0, "highest"), maps)


@pytest.mark.parametrize(("key", "kwargs"), [("masking.fractions", {"fraction": 1.5}),
                                              ("masking.modes", {"mode": "middle"}),
                                              ("masking.fill", {"fill": "noise"})])
def test_bad_masking_arguments_name_their_key(key, kwargs):
    args = {"fraction": 0.1, "mode": "highest", "fill": "mean"} | kwargs
    with pytest.raises(ConfigError, match=key):
        mask_maps(gaussian_field(1, seed=7), args["fraction"], args["mode"], args["fill"])


@pytest.mark.parametrize(("looks_at", "sign", "hurts", "spares"),
                         [("peaks", 1.0, "highest", "lowest"), ("voids", -1.0, "lowest", "highest")])
def test_masking_experiment_tells_a_peak_detector_from_a_void_detector(looks_at, sign, hurts, spares):
    maps, labels = dataset(sign, n=128)
    task = detector_task(looks_at, threshold_between_classes(maps, labels, sign))
    batches = [{"convergence_map": maps[i:i + 64], "label": labels[i:i + 64]} for i in (0, 64)]
    results = masking_experiment(task, batches, fractions=(0.01, 0.05))
    unmasked = results["unmasked"][0.0]["acc"]
    assert unmasked > 0.9
    assert set(results["unmasked"][0.0]) == {"acc", "auroc"}
    # Masking the pixels the detector reads destroys it; masking the other tail does nothing.
    assert results[hurts][0.05]["acc"] < 0.65
    assert results[spares][0.05]["acc"] == pytest.approx(unmasked, abs=0.02)
    assert results[hurts][0.05]["acc"] < results["random"][0.05]["acc"]


def test_voids_vs_clusters_refuses_a_task_of_another_domain():
    class VoxelTask(BinaryClassificationTask):
        pass

    task = VoxelTask(nn.Linear(3, 1), input_key="voxels")
    with pytest.raises(ConfigError, match=r"ckpt_path='next.ckpt': task VoxelTask reads 'voxels'.*'convergence_map'"):
        check_lensing_task(task, "ckpt_path", "next.ckpt")
    with pytest.raises(ConfigError, match="expected shape"):
        standardised_kappa(torch.zeros(2, 8, 8))


def test_lensing_figures(tmp_path):
    maps = gaussian_field(4, seed=8)
    binned = kappa_binned_attribution(maps, maps.abs())
    p1 = save_kappa_binned_figure({"noise-free": binned, "noisy": binned}, tmp_path / "k.png", "IG")
    fake = {"unmasked": {0.0: {"acc": 0.8}}, **{m: {0.01: {"acc": 0.7}, 0.1: {"acc": 0.6}}
                                                for m in ("highest", "lowest", "random")}}
    p2 = save_masking_figure({"noise-free": fake}, tmp_path / "m.png")
    assert p1.stat().st_size > 1000 and p2.stat().st_size > 1000
