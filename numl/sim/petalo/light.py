"""Scintillation light: solid angle of every SiPM seen from each deposit, Poisson charges, first-photon times.

Torch, so that it runs on a GPU when one is given. Walls are black and LXe is taken as transparent over
the 5 cm depth (Rayleigh scattering length ~30 cm at 175 nm): each SiPM sees the direct light only.
The whole ring is read out, so that the hottest SiPM is found on the full readout; per deposit only the
columns it can see at all are computed (see `visible_half_columns`).
"""

from __future__ import annotations

import math

import torch

from numl.sim.petalo.config import PetaloConfig
from numl.sim.petalo.transport import SPEED_OF_LIGHT_MM_NS

INNER, OUTER = 0, 1


def column_phi_rad(config: PetaloConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    return (torch.arange(config.n_columns, device=device, dtype=torch.float32) + 0.5) * (2 * math.pi / config.n_columns)


def row_z_mm(config: PetaloConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    return (
        torch.arange(config.n_rows, device=device, dtype=torch.float32) + 0.5
    ) * config.sipm_pitch_mm - config.axial_length_mm / 2


def visible_half_columns(config: PetaloConfig) -> int:
    """Columns on either side of a deposit that can receive light.

    Inner sensors face outward and see a point at radius r only within acos(R_in / r); outer sensors are
    hidden by the bore beyond acos(R_in / r) + acos(R_in / R_out). Both are at most 2 acos(R_in / R_out).
    """
    max_angle = 2 * math.acos(config.inner_radius_mm / config.outer_radius_mm)
    return min(int(math.ceil(max_angle / (2 * math.pi / config.n_columns))) + 1, config.n_columns // 2)


def _rectangle_corner(u: torch.Tensor, v: torch.Tensor, d: torch.Tensor, u2_d2: torch.Tensor) -> torch.Tensor:
    """atan(u v / (d sqrt(u^2 + v^2 + d^2))) for u, d: [P, C, 1], v: [P, 1, R]; u2_d2 = u^2 + d^2."""
    return torch.atan2(u * v, d * torch.sqrt(u2_d2 + v * v))


def solid_angle_sr(
    config: PetaloConfig, position_mm: torch.Tensor, phi_rad: torch.Tensor | None = None
) -> torch.Tensor:
    """Solid angle [sr] of SiPMs from each point: [n_points, 2 faces, n_columns, n_rows].

    phi_rad ([n_points, n_columns] or [n_columns]) selects the columns; default the whole ring.
    Each SiPM is a flat square tangent to its face; for a point at distance d from its plane the solid
    angle of a rectangle follows from atan(u v / (d sqrt(u^2 + v^2 + d^2))) at its four corners.
    Sensors facing away from the point, and outer sensors hidden behind the bore, get zero.
    """
    phi = column_phi_rad(config, position_mm.device) if phi_rad is None else phi_rad
    z_rows = row_z_mm(config, position_mm.device)
    x, y, z = position_mm[:, 0:1], position_mm[:, 1:2], position_mm[:, 2:3]
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    radial = x * cos_phi + y * sin_phi  # [P, C]
    tangential = -x * sin_phi + y * cos_phi  # [P, C]
    half = config.sipm_size_mm / 2
    u1, u2 = (-half - tangential)[:, :, None], (half - tangential)[:, :, None]
    v1, v2 = (z_rows - half - z)[:, None, :], (z_rows + half - z)[:, None, :]
    faces = []
    for face, d in ((INNER, radial - config.inner_radius_mm), (OUTER, config.outer_radius_mm - radial)):
        visible = d > 1e-6
        if face == OUTER:
            # The chord from the point to the sensor must not pass through the bore (r < inner radius).
            dx, dy = config.outer_radius_mm * cos_phi - x, config.outer_radius_mm * sin_phi - y
            t = (-(x * dx + y * dy) / (dx**2 + dy**2)).clamp(0, 1)
            visible &= (x + t * dx) ** 2 + (y + t * dy) ** 2 >= config.inner_radius_mm**2
        dd = torch.where(visible, d, torch.ones_like(d))[:, :, None]
        a1, a2 = u1 * u1 + dd * dd, u2 * u2 + dd * dd
        omega = (
            _rectangle_corner(u2, v2, dd, a2)
            - _rectangle_corner(u1, v2, dd, a1)
            - _rectangle_corner(u2, v1, dd, a2)
            + _rectangle_corner(u1, v1, dd, a1)
        )
        # clamp: far sensors' corner terms cancel to rounding error, which may come out slightly negative
        faces.append(torch.where(visible[:, :, None], omega.clamp(min=0), torch.zeros_like(omega)))
    return torch.stack(faces, dim=1)


def expected_photoelectrons(
    config: PetaloConfig, position_mm: torch.Tensor, energy_kev: torch.Tensor, phi_rad: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean charge [pe] per SiPM: N_photons * PDE * solid angle / 4 pi, N_photons = light yield * energy."""
    scale = config.light_yield_per_kev * energy_kev * config.photon_detection_efficiency / (4 * math.pi)
    return solid_angle_sr(config, position_mm, phi_rad) * scale[:, None, None, None]


def first_photon_time_ns(config: PetaloConfig, n_pe: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Emission time of the earliest of n_pe >= 1 detected photons.

    Exact for the two-component decay: k ~ Binomial(n, fast_fraction) photons are fast, and the minimum
    of k exponentials of decay tau is exponential with decay tau / k.
    """
    n_fast = torch.binomial(n_pe, torch.full_like(n_pe, config.fast_fraction), generator=generator)
    n_slow = n_pe - n_fast
    exp1 = torch.empty_like(n_pe).exponential_(generator=generator)
    exp2 = torch.empty_like(n_pe).exponential_(generator=generator)
    inf = torch.full_like(n_pe, math.inf)
    t_fast = torch.where(n_fast > 0, exp1 * config.fast_decay_ns / n_fast.clamp(min=1), inf)
    t_slow = torch.where(n_slow > 0, exp2 * config.slow_decay_ns / n_slow.clamp(min=1), inf)
    return torch.minimum(t_fast, t_slow)


def simulate_light(
    config: PetaloConfig,
    event: torch.Tensor,
    position_mm: torch.Tensor,
    time_ns: torch.Tensor,
    energy_kev: torch.Tensor,
    n_events: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Charges [pe] and first-photon times [ns] on the full ring for deposits grouped into n_events.

    Returns charge and time tensors of shape [n_events, 2, n_columns, n_rows]; time is inf where no
    photon arrived. Poisson counts per deposit add up to the Poisson count of the event. The sensor
    jitter is applied to the first photon of each SiPM (the earliest photon dominates its timestamp).
    """
    device = position_mm.device
    n_cols, n_rows = config.n_columns, config.n_rows
    half = visible_half_columns(config)
    pitch_rad = 2 * math.pi / n_cols
    site_col = torch.floor(torch.atan2(position_mm[:, 1], position_mm[:, 0]) % (2 * math.pi) / pitch_rad).long()
    cols = (site_col[:, None] + torch.arange(-half, half + 1, device=device)) % n_cols  # [P, L]
    phi = (cols.float() + 0.5) * pitch_rad
    n_pe = torch.poisson(expected_photoelectrons(config, position_mm, energy_kev, phi), generator=generator)

    site, face, col_local, row = torch.nonzero(n_pe, as_tuple=True)
    counts = n_pe[site, face, col_local, row]
    col = cols[site, col_local]
    flat = ((event[site] * 2 + face) * n_cols + col) * n_rows + row
    total = n_events * 2 * n_cols * n_rows
    charge = torch.zeros(total, dtype=counts.dtype, device=device).index_add_(0, flat, counts)

    radius = torch.where(face == INNER, config.inner_radius_mm, config.outer_radius_mm)
    sensor_phi = (col.float() + 0.5) * pitch_rad
    sensor = torch.stack(
        [
            radius * torch.cos(sensor_phi),
            radius * torch.sin(sensor_phi),
            (row.float() + 0.5) * config.sipm_pitch_mm - config.axial_length_mm / 2,
        ],
        dim=1,
    )
    travel_ns = torch.linalg.norm(sensor - position_mm[site], dim=1) * config.refractive_index / SPEED_OF_LIGHT_MM_NS
    arrival = first_photon_time_ns(config, counts, generator) + travel_ns + time_ns[site]
    first = torch.full((total,), math.inf, dtype=arrival.dtype, device=device)
    first = first.scatter_reduce(0, flat, arrival, reduce="amin", include_self=True)
    if config.time_jitter_ns > 0:
        first = first + config.time_jitter_ns * torch.randn(total, generator=generator, device=device)
    shape = (n_events, 2, n_cols, n_rows)
    return charge.reshape(shape), first.reshape(shape)
