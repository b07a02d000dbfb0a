"""PETALO events as a pure function of (config, n_events, seed): gamma transport, light, readout window."""

from __future__ import annotations

import math

import numpy as np
import torch

from numl.sim.petalo.config import PetaloConfig
from numl.sim.petalo.light import column_phi_rad, simulate_light
from numl.sim.petalo.transport import PHOTOELECTRIC, Deposits, entry_points, transport

#: arrays returned per event, with their dtypes in memory and on disk
EVENT_KEYS = (
    "sipm_charge",
    "sipm_time",
    "total_charge_pe",
    "phi_ref_rad",
    "position_mm",
    "energy_kev",
    "n_interactions",
    "multi_site",
    "photoelectric",
    "barycentre_mm",
)


def wrap_angle(phi: np.ndarray | torch.Tensor):
    """Angle into [-pi, pi)."""
    return (phi + math.pi) % (2 * math.pi) - math.pi


def _truth(config: PetaloConfig, deps: Deposits, n_gammas: int) -> dict[str, np.ndarray]:
    energy = np.bincount(deps.event, weights=deps.energy_kev, minlength=n_gammas)
    n_int = np.bincount(deps.event, minlength=n_gammas)
    first = np.full((n_gammas, 3), np.nan)
    is_first = deps.step == 0
    first[deps.event[is_first]] = deps.position_mm[is_first]
    photo_first = np.zeros(n_gammas, dtype=bool)
    photo_first[deps.event[is_first]] = deps.process[is_first] == PHOTOELECTRIC
    distance = np.linalg.norm(deps.position_mm - first[deps.event], axis=1)
    spread = np.zeros(n_gammas)
    np.maximum.at(spread, deps.event, distance)
    weighted = np.stack(
        [
            np.bincount(deps.event, weights=deps.energy_kev * deps.position_mm[:, i], minlength=n_gammas)
            for i in range(3)
        ],
        axis=1,
    )
    barycentre = weighted / np.maximum(energy, 1e-12)[:, None]
    return {
        "energy_kev": energy,
        "n_interactions": n_int,
        "first_mm": first,
        "multi_site": (spread > config.multi_site_distance_mm).astype(np.float32),
        "photoelectric": photo_first & (n_int == 1),
        "barycentre_mm": barycentre,
    }


def _readout_window(config: PetaloConfig, charge: torch.Tensor, time: torch.Tensor) -> dict[str, torch.Tensor]:
    """Crop window_columns SiPM columns around the hottest SiPM (either face) of the full-ring readout.

    Returns charge and time as [event, face, z row, phi column]; times are relative to the earliest
    photon in the window and 0 where no photon arrived (the charge tells these apart).
    """
    n_events, _, n_cols, _ = charge.shape
    hottest = charge.reshape(n_events, -1).argmax(dim=1)
    column = (hottest % (n_cols * config.n_rows)) // config.n_rows
    offsets = torch.arange(config.window_columns, device=charge.device) - config.window_columns // 2
    cols = (column[:, None] + offsets) % n_cols  # [E, W]
    index = cols[:, None, :, None].expand(n_events, 2, config.window_columns, config.n_rows)
    window_charge = charge.gather(2, index).transpose(2, 3)
    window_time = time.gather(2, index).transpose(2, 3)
    hit = torch.isfinite(window_time)
    earliest = torch.where(hit, window_time, torch.full_like(window_time, math.inf)).amin(dim=(1, 2, 3), keepdim=True)
    window_time = torch.where(hit, window_time - earliest, torch.zeros_like(window_time))
    phi_ref = column_phi_rad(config, charge.device)[column]
    return {
        "sipm_charge": window_charge,
        "sipm_time": window_time,
        "total_charge_pe": charge.sum(dim=(1, 2, 3)),
        "phi_ref_rad": phi_ref,
    }


def simulate_events(
    config: PetaloConfig,
    n_events: int,
    seed: int,
    full_absorption_only: bool = False,
    device: str | torch.device = "cpu",
    chunk_events: int = 512,
) -> dict[str, np.ndarray]:
    """Simulate n_events gammas that deposit energy in the LXe (with full_absorption_only: all 511 keV).

    position_mm holds the first interaction point, the one that defines the line of response:
    (r, r * (phi - phi_ref), z), with phi_ref the phi of the hottest SiPM column.
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in EVENT_KEYS}
    done = 0
    while done < n_events:
        n_gammas = chunk_events * 2
        entry, direction = entry_points(config, n_gammas, rng)
        deps = transport(config, entry, direction, rng)
        truth = _truth(config, deps, n_gammas)
        keep = truth["energy_kev"] > 0
        if full_absorption_only:
            keep &= truth["energy_kev"] > config.gamma_energy_kev - 1e-6
        kept = np.flatnonzero(keep)[: n_events - done]
        if kept.size == 0:
            continue
        new_index = np.full(n_gammas, -1)
        new_index[kept] = np.arange(kept.size)
        sel = new_index[deps.event] >= 0
        as_t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        charge, time = simulate_light(
            config,
            as_t(new_index[deps.event[sel]]),
            as_t(deps.position_mm[sel]).float(),
            as_t(deps.time_ns[sel]).float(),
            as_t(deps.energy_kev[sel]).float(),
            kept.size,
            generator,
        )
        window = {k: v.cpu().numpy() for k, v in _readout_window(config, charge, time).items()}
        # Trigger: at least one photoelectron on the ring (a few-keV deposit at an axial end can give none).
        triggered = window["total_charge_pe"] > 0
        window = {k: v[triggered] for k, v in window.items()}
        kept = kept[triggered]
        first = truth["first_mm"][kept]
        r = np.hypot(first[:, 0], first[:, 1])
        phi = np.arctan2(first[:, 1], first[:, 0])
        rphi = r * wrap_angle(phi - window["phi_ref_rad"])
        parts["position_mm"].append(np.stack([r, rphi, first[:, 2]], axis=1))
        for key in ("sipm_charge", "sipm_time", "total_charge_pe", "phi_ref_rad"):
            parts[key].append(window[key])
        for key in ("energy_kev", "n_interactions", "multi_site", "photoelectric", "barycentre_mm"):
            parts[key].append(truth[key][kept])
        done += kept.size
    out = {k: np.concatenate(v) for k, v in parts.items()}
    for key, value in out.items():
        out[key] = value.astype(np.int64 if key == "n_interactions" else np.float32)
    return out
