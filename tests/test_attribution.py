"""Captum attributions through the shared task interface: sanity checks and refusals."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.nn import functional as F

from numl.explain.attribution import (
    METHODS,
    AttributionConfig,
    attribute,
    completeness_gap,
    randomised_copy,
    rank_correlation,
)
from numl.explain.figures import save_attribution_figures
from numl.explain.run import check_task, run_and_save
from numl.tasks.classification import BinaryClassificationTask
from numl.utils.errors import ConfigError

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
N_PIX = 16


def small_cnn(in_channels: int = 1, n_outputs: int = 1, activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), activation(), nn.Conv2d(8, 8, 3, padding=1), activation(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_outputs),
    )


def make_task(model: nn.Module, input_key: str = "convergence_map") -> BinaryClassificationTask:
    return BinaryClassificationTask(model, input_key=input_key).eval()


class MultiClassTask(BinaryClassificationTask):
    """K class scores per event, to exercise target selection."""

    def attribution_forward(self, inputs):
        return self.model(inputs)


def blob_maps(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """White-noise maps; class 1 carries a positive Gaussian blob in the lower-left quadrant."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    maps = torch.randn(n, 1, N_PIX, N_PIX, generator=g)
    yy, xx = torch.meshgrid(torch.arange(N_PIX), torch.arange(N_PIX), indexing="ij")
    blob = 2.0 * torch.exp(-((yy - 4.0) ** 2 + (xx - 4.0) ** 2) / (2 * 1.5**2))
    return maps + labels[:, None, None, None] * blob, labels


def blob_region() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(N_PIX), torch.arange(N_PIX), indexing="ij")
    return ((yy - 4.0) ** 2 + (xx - 4.0) ** 2) <= 9.0


@pytest.fixture(scope="module")
def trained_task() -> BinaryClassificationTask:
    torch.manual_seed(0)
    task = make_task(small_cnn())
    maps, labels = blob_maps(512, seed=1)
    optimiser = torch.optim.Adam(task.parameters(), lr=1e-2)
    task.train()
    for step in range(60):
        batch = slice((step * 64) % 512, (step * 64) % 512 + 64)
        loss = F.binary_cross_entropy_with_logits(task.attribution_forward(maps[batch]), labels[batch].float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    task.eval()
    test_maps, test_labels = blob_maps(256, seed=2)
    with torch.no_grad():
        accuracy = ((task.attribution_forward(test_maps) > 0).long() == test_labels).float().mean()
    assert accuracy > 0.85, f"the toy CNN did not learn the blob (accuracy {accuracy:.2f})"
    return task


# ----- configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_every_attribution_config_composes(method):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("attribute", overrides=[f"attribution={method}", "ckpt_path=x.ckpt"])
    parsed = AttributionConfig.from_mapping(dict(cfg.attribution))
    assert parsed.method == method
    assert parsed.as_dict()["method"] == method


def test_default_attribution_is_integrated_gradients():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("attribute")
    assert cfg.attribution.method == "integrated_gradients"
    assert cfg.attribution.baseline in ("zero", "mean", "smoothed")


@pytest.mark.parametrize(
    ("node", "named"),
    [
        ({"method": "lrp"}, "attribution.method='lrp'"),
        ({"method": "saliency", "n_steps": 10}, "attribution.n_steps"),
        ({"method": "integrated_gradients", "baseline": "noise"}, "attribution.baseline='noise'"),
        ({"method": "integrated_gradients", "n_steps": 0}, "attribution.n_steps=0"),
        ({"method": "occlusion", "window_pix": -2}, "attribution.window_pix=-2"),
    ],
)
def test_bad_attribution_config_names_the_key(node, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")) as err:
        AttributionConfig.from_mapping(node)
    assert "\n" not in str(err.value)


# ----- Integrated Gradients completeness -------------------------------------------------------
@pytest.mark.parametrize("baseline", ["zero", "mean", "smoothed"])
def test_integrated_gradients_completeness(trained_task, baseline):
    maps, _ = blob_maps(16, seed=3)
    cfg = AttributionConfig.from_mapping({"method": "integrated_gradients", "baseline": baseline, "n_steps": 64})
    result = attribute(trained_task, maps, cfg)
    with torch.no_grad():
        difference = trained_task.attribution_forward(maps) - trained_task.attribution_forward(result.baseline)
    total = result.attributions.flatten(1).sum(1)
    # The gap to f(x) - f(baseline) is what Captum reports as the convergence delta ...
    torch.testing.assert_close(total - difference, result.convergence_delta, atol=1e-5, rtol=1e-4)
    # ... and it is small: the path integral converged.
    assert (result.convergence_delta.abs() <= 0.02 * difference.abs() + 5e-3).all()


def test_completeness_delta_grows_with_a_coarse_path(trained_task):
    """The delta is a real measurement: a 2-point left Riemann sum misses f(x) - f(baseline) clearly."""
    maps, _ = blob_maps(16, seed=3)
    coarse = AttributionConfig.from_mapping({"method": "integrated_gradients", "n_steps": 2,
                                             "integration": "riemann_left"})
    result = attribute(trained_task, maps, coarse)
    gap = completeness_gap(trained_task, maps, result)
    torch.testing.assert_close(gap, result.convergence_delta, atol=1e-5, rtol=1e-4)
    assert gap.abs().median() > 1e-2


@pytest.mark.parametrize("method", ["deeplift", "gradient_shap"])
def test_other_complete_methods_report_their_gap(trained_task, method):
    maps, _ = blob_maps(8, seed=4)
    result = attribute(trained_task, maps, AttributionConfig.from_mapping({"method": method, "baseline": "zero"}))
    gap = completeness_gap(trained_task, maps, result)
    if method == "deeplift":  # exact for ReLU networks (rescale rule)
        assert gap.abs().max() < 1e-4
        torch.testing.assert_close(gap, result.convergence_delta, atol=1e-5, rtol=1e-4)
    else:  # GradientSHAP is complete only in expectation over its random path points
        assert gap.abs().median() < 0.5 * (gap.abs() + result.attributions.flatten(1).sum(1).abs()).median()


# ----- model randomisation (Adebayo et al. 2018) -----------------------------------------------
def test_model_randomisation_changes_the_attributions(trained_task):
    maps, labels = blob_maps(32, seed=5)
    maps = maps[labels == 1]
    cfg = AttributionConfig.from_mapping({"method": "integrated_gradients", "n_steps": 32})
    trained = attribute(trained_task, maps, cfg).attributions
    randomised = attribute(randomised_copy(trained_task, seed=7), maps, cfg).attributions
    again = attribute(trained_task, maps, AttributionConfig.from_mapping(
        {"method": "integrated_gradients", "n_steps": 48})).attributions
    # Same model, different path resolution: the same map. Randomised weights: a different one
    # (signed attributions; |IG| from a zero baseline partly follows |input| whatever the weights).
    assert np.median(rank_correlation(trained, again)) > 0.95
    assert np.median(rank_correlation(trained, randomised)) < 0.3
    # The trained model looks at the blob; the randomised one much less (its IG still follows |input|,
    # which is larger on the blob).
    region = blob_region()
    share_trained = (trained.abs()[:, 0, region].sum((1,)) / trained.abs().flatten(1).sum(1)).median()
    share_random = (randomised.abs()[:, 0, region].sum((1,)) / randomised.abs().flatten(1).sum(1)).median()
    pixel_share = region.float().mean()
    assert share_trained > 2 * pixel_share
    assert share_random < 0.6 * share_trained


def test_randomised_copy_leaves_the_trained_model_alone(trained_task):
    before = [p.clone() for p in trained_task.parameters()]
    clone = randomised_copy(trained_task)
    assert all(torch.equal(a, b) for a, b in zip(before, trained_task.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, clone.parameters(), strict=True))


# ----- every input layout, every method --------------------------------------------------------
class HitSetModel(nn.Module):
    """Per-hit MLP and a sum over hits (KM3NeT-like [B, n_hits, features])."""

    def __init__(self) -> None:
        super().__init__()
        self.hit = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def forward(self, hits):
        return self.head(self.hit(hits).sum(1))


LAYOUTS = {
    "lensing map": (lambda: small_cnn(2), (4, 2, N_PIX, N_PIX)),
    "NEXT voxels": (lambda: nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                                          nn.Flatten(), nn.Linear(4, 1)), (3, 1, 8, 8, 8)),
    "KM3NeT hits": (HitSetModel, (3, 12, 5)),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_layout(layout, method):
    factory, shape = LAYOUTS[layout]
    torch.manual_seed(0)
    task = make_task(factory(), input_key="inputs")
    inputs = torch.randn(*shape)
    node = {"method": method}
    if method == "occlusion":
        node |= {"window_pix": 2, "stride_pix": 2}
    result = attribute(task, inputs, AttributionConfig.from_mapping(node))
    assert result.attributions.shape == inputs.shape
    assert torch.isfinite(result.attributions).all()
    assert result.attributions.abs().sum() > 0


# ----- refusals ---------------------------------------------------------------------------------
def test_target_out_of_range_single_score(trained_task):
    maps, _ = blob_maps(2, seed=6)
    with pytest.raises(ConfigError, match=r"target=1: out of range.*one score per event"):
        attribute(trained_task, maps, AttributionConfig(method="saliency"), target=1)


def test_target_out_of_range_multi_class():
    task = MultiClassTask(small_cnn(n_outputs=3), input_key="convergence_map").eval()
    maps, _ = blob_maps(4, seed=6)
    with pytest.raises(ConfigError, match=r"target=3: out of range.*3 class scores.*0\.\.2"):
        attribute(task, maps, AttributionConfig(method="saliency"), target=3)
    ok = attribute(task, maps, AttributionConfig(method="saliency"), target=2)
    predicted = attribute(task, maps, AttributionConfig(method="saliency"), target=None)
    assert ok.attributions.shape == maps.shape
    torch.testing.assert_close(predicted.target, task.attribution_forward(maps).argmax(1))


@pytest.mark.parametrize(
    ("activation", "named"),
    [(nn.GELU, "GELU, which DeepLift has no rule for"), (nn.SiLU, "SiLU")],
)
def test_deeplift_refuses_unsupported_nonlinearities(activation, named):
    task = make_task(small_cnn(activation=activation))
    with pytest.raises(ConfigError, match=f"attribution=deeplift: .*{named}"):
        attribute(task, torch.randn(2, 1, N_PIX, N_PIX), AttributionConfig.from_mapping({"method": "deeplift"}))


def test_deeplift_refuses_reused_and_functional_activations():
    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.act = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.act(self.conv2(self.act(self.conv1(x)))).mean((2, 3)))

    class Functional(Reused):
        def forward(self, x):
            return self.head(F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))

    cfg = AttributionConfig.from_mapping({"method": "deeplift"})
    with pytest.raises(ConfigError, match="calls the same ReLU module more than once"):
        attribute(make_task(Reused()), torch.randn(2, 1, 8, 8), cfg)
    with pytest.raises(ConfigError, match="no nonlinearity as an nn.Module"):
        attribute(make_task(Functional()), torch.randn(2, 1, 8, 8), cfg)


def test_smoothed_baseline_needs_an_image_and_occlusion_window_must_fit():
    task = make_task(HitSetModel(), input_key="hits")
    hits = torch.randn(2, 12, 5)
    with pytest.raises(ConfigError, match=r"attribution.baseline=smoothed: needs image inputs"):
        attribute(task, hits, AttributionConfig.from_mapping({"method": "integrated_gradients",
                                                               "baseline": "smoothed"}))
    with pytest.raises(ConfigError, match=r"attribution.window_pix=32: larger than input dimension"):
        attribute(make_task(small_cnn()), torch.randn(2, 1, N_PIX, N_PIX),
                  AttributionConfig.from_mapping({"method": "occlusion", "window_pix": 32}))


def test_a_model_that_needs_more_than_the_input_is_refused():
    class NeedsCoordinates(nn.Module):
        def forward(self, features, coords, batch_size):
            return features.sum(1)

    with pytest.raises(ConfigError, match=r"attribution: BinaryClassificationTask.attribution_forward cannot run on "
                                          r"its input 'features' alone \(TypeError"):
        attribute(make_task(NeedsCoordinates(), input_key="features"), torch.randn(5, 3), AttributionConfig())


def test_a_module_without_the_task_interface_is_refused():
    with pytest.raises(ConfigError, match=r"ckpt_path='run.ckpt': Sequential is not a numl task"):
        check_task(small_cnn(), "ckpt_path", "run.ckpt")


# ----- outputs -----------------------------------------------------------------------------------
def test_run_and_save_writes_hdf5_and_figures(trained_task, tmp_path):
    maps, labels = blob_maps(12, seed=8)
    batches = [{"convergence_map": maps[:8], "label": labels[:8]}, {"convergence_map": maps[8:], "label": labels[8:]}]
    cfg = AttributionConfig.from_mapping({"method": "integrated_gradients", "baseline": "mean", "n_steps": 8})
    summary = run_and_save(trained_task, batches, cfg, tmp_path, n_examples=2, info={"ckpt_path": "x.ckpt"})
    with h5py.File(tmp_path / "attributions.h5") as h5:
        np.testing.assert_allclose(h5["convergence_map"][...], maps.numpy())
        assert h5["attributions"].shape == maps.shape
        np.testing.assert_array_equal(h5["batch/label"][...], labels.numpy())
        np.testing.assert_array_equal(h5["predictions/label"][...], labels.numpy())
        assert h5["predictions/score"].shape == (12,)
        assert h5["convergence_delta"].shape == (12,)
        # The mean baseline is the mean over all attributed events, identical for every event.
        np.testing.assert_allclose(h5["baseline"][0], maps.mean(0).numpy(), atol=1e-6)
        assert '"method": "integrated_gradients"' in h5.attrs["numl_attribution"]
        assert h5.attrs["ckpt_path"] == "x.ckpt"
    names = {Path(p).name for p in summary["figures"]}
    assert names == {"input_maps.png", "attribution_overlay.png", "class_mean_attribution.png"}
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.parametrize("layout", ["NEXT voxels", "KM3NeT hits"])  # maps: test_run_and_save_writes_hdf5_and_figures
def test_figures_for_other_layouts(layout, tmp_path):
    _, shape = LAYOUTS[layout]
    inputs, attributions = torch.randn(*shape), torch.randn(*shape)
    paths = save_attribution_figures(inputs, attributions, tmp_path, labels=torch.tensor([0, 1, 1]), n_examples=1)
    assert [p.name for p in paths] == ["input_maps.png", "attribution_overlay.png", "class_mean_attribution.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
