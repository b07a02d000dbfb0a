"""Captum attributions of any numl task, chosen by an `attribution/` config node.

Every task exposes `attribution_forward(inputs) -> scores` (one score per event, or one per class)
and `input_key`; this module only uses those, so the same code explains lensing maps, NEXT voxels,
PETALO SiPM images and KM3NeT hit sets.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from captum.attr import DeepLift, GradientShap, InputXGradient, IntegratedGradients, Occlusion, Saliency
from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
from scipy.ndimage import gaussian_filter
from torch import nn

from numl.utils.errors import ConfigError, check_choice, check_positive

BASELINES = ("zero", "mean", "smoothed")

# Arguments each method accepts (besides `method`); a key outside its set is a config error.
METHOD_ARGS: dict[str, frozenset[str]] = {
    "integrated_gradients": frozenset({"baseline", "smoothing_sigma_pix", "n_steps", "internal_batch_size",
                                       "integration"}),
    "saliency": frozenset({"absolute"}),
    "input_x_gradient": frozenset(),
    "gradient_shap": frozenset({"baseline", "smoothing_sigma_pix", "n_samples", "stdevs"}),
    "deeplift": frozenset({"baseline", "smoothing_sigma_pix"}),
    "occlusion": frozenset({"baseline", "smoothing_sigma_pix", "window_pix", "stride_pix"}),
}
METHODS = tuple(METHOD_ARGS)
# Methods whose attributions satisfy completeness and come with Captum's convergence delta.
METHODS_WITH_DELTA = ("integrated_gradients", "gradient_shap", "deeplift")
INTEGRATIONS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")

# Nonlinear modules DeepLift has no rule for: it would treat them as linear and return wrong multipliers.
_DEEPLIFT_UNSUPPORTED = (
    nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Hardsigmoid, nn.PReLU, nn.SELU, nn.CELU, nn.GLU,
    nn.LogSoftmax, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.MultiheadAttention,
)


@dataclass(frozen=True)
class AttributionConfig:
    """One `attribution/` node, checked: `method` plus the arguments that method takes."""

    method: str = "integrated_gradients"
    baseline: str | None = None
    smoothing_sigma_pix: float = 2.0
    n_steps: int = 64
    internal_batch_size: int | None = None
    integration: str = "gausslegendre"
    absolute: bool = True
    n_samples: int = 32
    stdevs: float = 0.0
    window_pix: int = 4
    stride_pix: int = 2
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any], key: str = "attribution") -> AttributionConfig:
        node = dict(node)
        method = node.pop("method", None)
        check_choice(f"{key}.method", method, METHODS)
        allowed = METHOD_ARGS[method]
        for name in node:
            if name not in allowed:
                names = ", ".join(sorted(allowed)) or "none"
                raise ConfigError(f"{key}.{name}: not an argument of {method} (allowed: {names})")
        if "baseline" in allowed:
            node.setdefault("baseline", "zero")
            check_choice(f"{key}.baseline", node["baseline"], BASELINES)
        if "smoothing_sigma_pix" in node:
            check_positive(f"{key}.smoothing_sigma_pix", node["smoothing_sigma_pix"])
        for name in ("n_steps", "n_samples", "window_pix", "stride_pix"):
            if name in node:
                check_positive(f"{key}.{name}", node[name], integer=True)
        if node.get("internal_batch_size") is not None:
            check_positive(f"{key}.internal_batch_size", node["internal_batch_size"], integer=True)
        if "stdevs" in node:
            check_positive(f"{key}.stdevs", node["stdevs"], allow_zero=True)
        if "integration" in node:
            check_choice(f"{key}.integration", node["integration"], INTEGRATIONS)
        if "absolute" in node and not isinstance(node["absolute"], bool):
            raise ConfigError(f"{key}.absolute={node['absolute']!r}: must be true or false")
        return cls(method=method, **node)

    def as_dict(self) -> dict[str, Any]:
        """The method and only the arguments it uses (what is written next to the attributions)."""
        return {"method": self.method, **{name: getattr(self, name) for name in sorted(METHOD_ARGS[self.method])}}


class ScoreModule(nn.Module):
    """`task.attribution_forward` as an nn.Module, which DeepLift needs in order to hook its layers."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        scores = self.task.attribution_forward(inputs)
        # One score per event as [B, 1] becomes [B], so Captum needs no target for it.
        return scores.reshape(-1) if scores.ndim == 2 and scores.shape[1] == 1 else scores


def n_scores(module: ScoreModule, inputs: torch.Tensor) -> int:
    """1 for one score per event, K for one score per class."""
    name = type(module.task).__name__
    try:
        with torch.no_grad():
            scores = module(inputs[:1])
    except (TypeError, RuntimeError) as err:  # e.g. a sparse model that needs coordinates besides the features
        raise ConfigError(f"attribution: {name}.attribution_forward cannot run on its input "
                          f"{getattr(module.task, 'input_key', '?')!r} alone ({type(err).__name__}: "
                          f"{str(err).splitlines()[0]}); the task must implement attribution_forward") from None
    if scores.ndim == 1:
        return 1
    if scores.ndim == 2:
        return scores.shape[1]
    raise ConfigError(f"{name}.attribution_forward returns shape {tuple(scores.shape)}; "
                      "Captum needs [batch] or [batch, n_classes]")


def resolve_target(module: ScoreModule, inputs: torch.Tensor, target: int | None) -> int | torch.Tensor | None:
    """Check `target` against the model's outputs; None explains the predicted class (or the single score)."""
    k = n_scores(module, inputs)
    if k == 1:
        if target not in (None, 0):
            raise ConfigError(f"target={target!r}: out of range; {type(module.task).__name__} gives one score "
                              "per event, so target must be null or 0")
        return None
    if target is None:
        with torch.no_grad():
            return module(inputs).argmax(dim=1)
    if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < k:
        raise ConfigError(f"target={target!r}: out of range; {type(module.task).__name__} gives {k} class scores, "
                          f"so target must be in 0..{k - 1} or null (the predicted class)")
    return target


def _spatial_dims(inputs: torch.Tensor) -> tuple[int, ...]:
    """Image dims of [B, C, H, W] or [B, C, X, Y, Z]; other layouts (hit sets [B, N, F]) have none."""
    return tuple(range(2, inputs.ndim)) if inputs.ndim in (4, 5) else ()


def make_baseline(cfg: AttributionConfig, inputs: torch.Tensor, reference_mean: torch.Tensor | None = None,
                  key: str = "attribution") -> torch.Tensor:
    """The reference input the attribution is measured from.

    zero: an empty input. mean: the mean input over the attributed events (`reference_mean`), which
    keeps the average signal and asks what each event adds to it. smoothed: each input blurred with
    a Gaussian of `smoothing_sigma_pix` pixels, which keeps the large-scale structure and asks what
    the small scales contribute.
    """
    if cfg.baseline == "zero":
        return torch.zeros_like(inputs)
    if cfg.baseline == "mean":
        mean = inputs.mean(0, keepdim=True) if reference_mean is None else reference_mean.reshape(1, *inputs.shape[1:])
        return mean.to(inputs).expand_as(inputs).clone()
    dims = _spatial_dims(inputs)
    if not dims:
        raise ConfigError(f"{key}.baseline=smoothed: needs image inputs [batch, channel, H, W(, D)], "
                          f"got shape {tuple(inputs.shape)}; use zero or mean")
    sigma = [0.0, 0.0] + [float(cfg.smoothing_sigma_pix)] * len(dims)
    # Periodic boundaries: the simulated maps and voxel grids are periodic or padded with zeros far from the edge.
    smoothed = gaussian_filter(inputs.detach().cpu().double().numpy(), sigma=sigma, mode="wrap")
    return torch.as_tensor(smoothed, dtype=inputs.dtype, device=inputs.device)


def check_method_applies(cfg: AttributionConfig, module: ScoreModule, inputs: torch.Tensor,
                         key: str = "attribution") -> None:
    """Refuse a method that would silently give wrong answers for this model or input."""
    name = type(module.task).__name__
    if not inputs.is_floating_point():
        raise ConfigError(f"{key}={cfg.method}: input of {name} has dtype {inputs.dtype}; gradient and occlusion "
                          "attributions need a floating-point input tensor")
    if cfg.method == "occlusion":
        dims = _spatial_dims(inputs) or tuple(range(1, inputs.ndim - 1)) or (1,)
        too_big = [d for d in dims if inputs.shape[d] < cfg.window_pix]
        if too_big:
            raise ConfigError(f"{key}.window_pix={cfg.window_pix}: larger than input dimension {too_big[0]} of size "
                              f"{inputs.shape[too_big[0]]} (input shape {tuple(inputs.shape)})")
    if cfg.method != "deeplift":
        return
    calls: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda mod, *_: calls.__setitem__(mod, calls.get(mod, 0) + 1))
             for m in module.modules() if m is not module]
    try:
        with torch.no_grad():
            module(inputs[:1])
    finally:
        for h in hooks:
            h.remove()
    unsupported = sorted({type(m).__name__ for m in calls if isinstance(m, _DEEPLIFT_UNSUPPORTED)})
    if unsupported:
        raise ConfigError(f"attribution=deeplift: {name}'s model uses {', '.join(unsupported)}, which DeepLift "
                          "has no rule for; use integrated_gradients or gradient_shap")
    reused = sorted({type(m).__name__ for m, n in calls.items() if n > 1 and type(m) in SUPPORTED_NON_LINEAR})
    if reused:
        raise ConfigError(f"attribution=deeplift: {name}'s model calls the same {', '.join(reused)} module more "
                          "than once per forward, which DeepLift cannot handle; use integrated_gradients")
    if not any(type(m) in SUPPORTED_NON_LINEAR for m in calls):
        raise ConfigError(f"attribution=deeplift: {name}'s model has no nonlinearity as an nn.Module (functional "
                          "activations?), so DeepLift cannot apply its rules; use integrated_gradients")


@dataclass
class AttributionResult:
    attributions: torch.Tensor  # same shape as the inputs
    baseline: torch.Tensor | None  # the reference input (None for saliency / input x gradient)
    convergence_delta: torch.Tensor | None  # per event: sum(attr) - (f(x) - f(baseline)), for IG/GradSHAP/DeepLift
    target: torch.Tensor | int | None


def attribute(task: nn.Module, inputs: torch.Tensor, cfg: AttributionConfig, target: int | None = None,
              reference_mean: torch.Tensor | None = None, seed: int = 0) -> AttributionResult:
    """Attribute `task.attribution_forward(inputs)` to the input features with the configured method."""
    module = ScoreModule(task).eval()
    if not isinstance(inputs, torch.Tensor):
        raise ConfigError(f"attribution: input {getattr(task, 'input_key', '?')!r} of {type(task).__name__} is a "
                          f"{type(inputs).__name__}, not a tensor; Captum attributes dense tensors")
    resolved = resolve_target(module, inputs, target)
    check_method_applies(cfg, module, inputs)
    inputs = inputs.detach().clone().requires_grad_(True)
    baseline = make_baseline(cfg, inputs.detach(), reference_mean) if "baseline" in METHOD_ARGS[cfg.method] else None
    delta = None
    if cfg.method == "integrated_gradients":
        attr, delta = IntegratedGradients(module).attribute(
            inputs, baselines=baseline, target=resolved, n_steps=cfg.n_steps, method=cfg.integration,
            internal_batch_size=cfg.internal_batch_size, return_convergence_delta=True)
    elif cfg.method == "saliency":
        attr = Saliency(module).attribute(inputs, target=resolved, abs=cfg.absolute)
    elif cfg.method == "input_x_gradient":
        attr = InputXGradient(module).attribute(inputs, target=resolved)
    elif cfg.method == "gradient_shap":
        # GradientSHAP draws random points between input and baseline; seed them for reproducibility.
        attr, delta = _gradient_shap(module, inputs, baseline, resolved, cfg, seed)
    elif cfg.method == "deeplift":
        attr, delta = DeepLift(module).attribute(inputs, baselines=baseline, target=resolved,
                                                 return_convergence_delta=True)
    else:
        attr = Occlusion(module).attribute(inputs, sliding_window_shapes=_occlusion_shape(inputs, cfg.window_pix),
                                           strides=_occlusion_shape(inputs, cfg.stride_pix), baselines=baseline,
                                           target=resolved)
    return AttributionResult(attr.detach(), None if baseline is None else baseline.detach(),
                             None if delta is None else delta.detach().reshape(-1), resolved)


def _gradient_shap(module: ScoreModule, inputs: torch.Tensor, baseline: torch.Tensor, target, cfg: AttributionConfig,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """GradientSHAP with per-event baselines.

    Captum treats the baselines as one distribution shared by all inputs; a smoothed baseline belongs
    to its own event, so that case runs event by event.
    """
    explainer = GradientShap(module)
    per_event = cfg.baseline == "smoothed"
    chunks = [(slice(i, i + 1)) for i in range(len(inputs))] if per_event else [slice(0, len(inputs))]
    attrs, deltas = [], []
    # GradientSHAP draws random points between input and baseline; seed them for reproducibility.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sl in chunks:
            t = target[sl] if isinstance(target, torch.Tensor) else target
            base = baseline[sl] if per_event else baseline[:1]
            attr, delta = explainer.attribute(inputs[sl], baselines=base, target=t, n_samples=cfg.n_samples,
                                              stdevs=cfg.stdevs, return_convergence_delta=True)
            attrs.append(attr)
            # Captum reports one delta per (event, sample); the worst sample bounds the event's error.
            deltas.append(delta.reshape(len(attr), -1).abs().amax(dim=1))
    return torch.cat(attrs), torch.cat(deltas)


def _occlusion_shape(inputs: torch.Tensor, size: int) -> tuple[int, ...]:
    """Occlusion window or stride of `size`. Images: all channels x size^d patches. Sets [B, N, F]: `size` whole
    elements (hits) at a time."""
    if _spatial_dims(inputs):
        return (inputs.shape[1],) + (size,) * (inputs.ndim - 2)
    if inputs.ndim == 2:
        return (size,)
    return (size,) + tuple(inputs.shape[2:])


def completeness_gap(task: nn.Module, inputs: torch.Tensor, result: AttributionResult) -> torch.Tensor:
    """Per event: sum of attributions minus (f(x) - f(baseline)); ~0 for a complete method."""
    module = ScoreModule(task).eval()
    with torch.no_grad():
        out_x, out_b = module(inputs), module(result.baseline)
    if out_x.ndim == 2:
        index = torch.as_tensor(result.target, device=out_x.device).reshape(-1, 1).expand(len(out_x), 1)
        out_x, out_b = out_x.gather(1, index)[:, 0], out_b.gather(1, index)[:, 0]
    return result.attributions.flatten(1).sum(1) - (out_x - out_b)


def randomised_copy(task: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of `task` whose every layer is re-initialised (Adebayo et al. 2018 model-randomisation test)."""
    clone = copy.deepcopy(task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in clone.modules():
            if hasattr(m, "reset_parameters") and m is not clone:
                m.reset_parameters()
    return clone.eval()


def rank_correlation(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> np.ndarray:
    """Per-event Spearman correlation of two attribution maps, the similarity measure of Adebayo et al. 2018.

    With `absolute`, of |attribution|: for path methods from a zero baseline that follows |input| for
    any model, so the signed version separates trained from random weights more clearly.
    """
    from scipy.stats import spearmanr

    a_np, b_np = (t.detach().flatten(1).cpu().double() for t in (a, b))
    a_np, b_np = (t.abs().numpy() if absolute else t.numpy() for t in (a_np, b_np))
    return np.array([spearmanr(x, y).statistic for x, y in zip(a_np, b_np, strict=True)])
