"""511 keV gamma transport in the LXe annulus: interaction depth, photoelectric vs Compton, multi-site.

Vectorised over gammas with numpy. Simplifications (each small at 511 keV in xenon):
coherent scattering is not tracked (it neither deposits energy nor turns the gamma by more than a few
degrees; its 5 % share of the XCOM total is left out of the free path), the Compton angle follows
Klein-Nishina for free electrons, electrons deposit at their creation point (CSDA range of a 340 keV
electron in LXe is below 1 mm) and xenon K fluorescence (30 keV, 0.4 mm mean free path) is absorbed
on the spot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numl.sim.petalo.config import PetaloConfig
from numl.sim.petalo.xenon import ELECTRON_MASS_KEV, cross_sections, sample_compton_energy_fraction

SPEED_OF_LIGHT_MM_NS = 299.792458
#: below this energy a photon is absorbed where it is (photoelectric mean free path < 0.1 mm)
CUTOFF_ENERGY_KEV = 10.0
PHOTOELECTRIC, COMPTON = 1, 2


@dataclass
class Deposits:
    """One row per interaction: the gamma it belongs to, where, when, how much energy, which process."""

    event: np.ndarray  # int64
    position_mm: np.ndarray  # [n, 3] x, y, z
    time_ns: np.ndarray
    energy_kev: np.ndarray
    process: np.ndarray  # PHOTOELECTRIC or COMPTON
    step: np.ndarray  # 0 for the first interaction of the gamma


def _cylinder_roots(p: np.ndarray, d: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Path lengths t (both roots, NaN if none) where the ray p + t d meets the cylinder x^2 + y^2 = radius^2."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1])
    c = p[:, 0] ** 2 + p[:, 1] ** 2 - radius**2
    disc = b**2 - 4 * a * c
    ok = (disc >= 0) & (a > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    safe_a = np.where(ok, a, 1.0)
    t1 = np.where(ok, (-b - sq) / (2 * safe_a), np.nan)
    t2 = np.where(ok, (-b + sq) / (2 * safe_a), np.nan)
    return t1, t2


def _rotate(direction: np.ndarray, cos_theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Turn unit vectors by polar angle theta around themselves, azimuth phi."""
    sin_theta = np.sqrt(np.clip(1 - cos_theta**2, 0, None))
    # An orthonormal frame (u, v, direction); the helper axis avoids being parallel to direction.
    helper = np.where(np.abs(direction[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(direction, u)
    new = (
        (sin_theta * np.cos(phi))[:, None] * u + (sin_theta * np.sin(phi))[:, None] * v + cos_theta[:, None] * direction
    )
    return new / np.linalg.norm(new, axis=1, keepdims=True)


def entry_points(config: PetaloConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gammas from annihilations uniform in the source disk, entering the LXe through the inner face.

    The entry point is uniform over the inner face (phi, z); the direction points from a random source
    point to it, so the incidence angles are those of a source spread over the field of view.
    """
    phi = rng.uniform(0, 2 * np.pi, n)
    z = rng.uniform(-config.axial_length_mm / 2, config.axial_length_mm / 2, n)
    entry = np.stack([config.inner_radius_mm * np.cos(phi), config.inner_radius_mm * np.sin(phi), z], axis=1)
    r_src = config.source_radius_mm * np.sqrt(rng.random(n))
    phi_src = rng.uniform(0, 2 * np.pi, n)
    z_src = rng.uniform(-config.axial_length_mm / 2, config.axial_length_mm / 2, n)
    source = np.stack([r_src * np.cos(phi_src), r_src * np.sin(phi_src), z_src], axis=1)
    direction = entry - source
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return entry, direction


def transport(
    config: PetaloConfig, entry: np.ndarray, direction: np.ndarray, rng: np.random.Generator, max_steps: int = 64
) -> Deposits:
    """Follow each gamma from its entry point until it is absorbed or leaves the LXe."""
    n = len(entry)
    half_z = config.axial_length_mm / 2
    pos = entry.astype(np.float64).copy()
    dirn = direction.astype(np.float64).copy()
    energy = np.full(n, config.gamma_energy_kev)
    path_mm = np.zeros(n)
    steps = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    rows: list[tuple[np.ndarray, ...]] = []
    for _ in range(max_steps * 2):
        if alive.size == 0:
            break
        p, d, e = pos[alive], dirn[alive], energy[alive]
        xs = cross_sections(e)
        mu_per_mm = xs.total_without_coherent * config.lxe_density_g_cm3 / 10.0
        free_path = rng.exponential(1.0 / mu_per_mm)
        # Distance to the first boundary: outer face, inner face (into the bore), or an axial end.
        _, t_out = _cylinder_roots(p, d, config.outer_radius_mm)
        t_in1, t_in2 = _cylinder_roots(p, d, config.inner_radius_mm)
        into_bore = np.nan_to_num(t_in1, nan=-1.0) > 1e-6
        with np.errstate(divide="ignore"):
            t_z = np.where(
                d[:, 2] > 0, (half_z - p[:, 2]) / d[:, 2], np.where(d[:, 2] < 0, (-half_z - p[:, 2]) / d[:, 2], np.inf)
            )
        t_exit = np.minimum(np.nan_to_num(t_out, nan=np.inf), t_z)
        t_exit = np.where(into_bore, np.minimum(t_exit, t_in1), t_exit)
        interacts = free_path < t_exit
        # A gamma that crosses the bore re-enters the LXe on the far side (if within the axial length).
        crosses = ~interacts & into_bore & (t_in1 <= t_exit + 1e-9)
        z_far = p[:, 2] + np.nan_to_num(t_in2) * d[:, 2]
        crosses &= np.abs(z_far) < half_z
        idx_cross = alive[crosses]
        pos[idx_cross] = p[crosses] + (t_in2[crosses] + 1e-6)[:, None] * d[crosses]
        path_mm[idx_cross] += t_in2[crosses] + 1e-6

        hit = alive[interacts]
        s = free_path[interacts]
        pos[hit] = p[interacts] + s[:, None] * d[interacts]
        path_mm[hit] += s
        e_hit = energy[hit]
        xs_hit = cross_sections(e_hit)
        photo = (rng.random(hit.size) < xs_hit.photoelectric / xs_hit.total_without_coherent) | (
            e_hit < CUTOFF_ENERGY_KEV
        )
        eps = np.ones(hit.size)
        compton = ~photo
        eps[compton] = sample_compton_energy_fraction(e_hit[compton], rng)
        deposited = np.where(photo, e_hit, e_hit * (1 - eps))
        rows.append(
            (
                hit,
                pos[hit].copy(),
                path_mm[hit] / SPEED_OF_LIGHT_MM_NS,
                deposited,
                np.where(photo, PHOTOELECTRIC, COMPTON),
                steps[hit].copy(),
            )
        )
        steps[hit] += 1
        # Compton: the photon continues with E' = eps E at cos(theta) = 1 - (1/eps - 1) m_e c^2 / E.
        c_idx = hit[compton]
        cos_theta = 1 - (1 / eps[compton] - 1) * ELECTRON_MASS_KEV / e_hit[compton]
        dirn[c_idx] = _rotate(dirn[c_idx], np.clip(cos_theta, -1, 1), rng.uniform(0, 2 * np.pi, c_idx.size))
        energy[c_idx] = e_hit[compton] * eps[compton]
        still = np.zeros(n, dtype=bool)
        still[c_idx] = steps[c_idx] < max_steps
        still[idx_cross] = True
        alive = np.flatnonzero(still)
    if not rows:
        empty = np.zeros(0)
        return Deposits(
            empty.astype(np.int64), np.zeros((0, 3)), empty, empty, empty.astype(np.int64), empty.astype(np.int64)
        )
    cols = list(zip(*rows, strict=True))
    return Deposits(*(np.concatenate(c) for c in cols))
