"""Atmospheric muon bundles at the depth of a neutrino telescope: the parametric formulas of MUPAGE.

The flux of bundles of m muons, the energy of each muon and its distance from the bundle axis are the
parametrisations of Becherini, Margiotta, Sioli & Spurio, Astropart. Phys. 25 (2006) 1 (fits to a full HEMAS + MUSIC
simulation of cosmic-ray showers and muon transport to 1.5-5 km.w.e. of water, 0-85 deg zenith), with the parameter
values the MUPAGE generator carries (Carminati, Bazzotti, Margiotta & Spurio, Comput. Phys. Commun. 179 (2008) 915),
the generator KM3NeT and ANTARES make their atmospheric-muon samples with. Units as in the paper: vertical depth h
in km.w.e., zenith theta in rad, muon energy in TeV, lateral distance r in m, flux in m^-2 s^-1 sr^-1.

numl samples bundles itself rather than calling MUPAGE: MUPAGE is a C++/ROOT program with no Python package, and
numl needs the bundles as arrays inside its own event loop. The sampling follows MUPAGE's definitions, which is what
the check against KM3NeT's own MUPAGE files needs (tests/test_km3net_atmospheric.py): bundle axes hit the top or the
side of the can (not its bottom: every bundle goes down), the depth is the vertical depth of the axis's impact
point, muons are parallel to the axis at lateral distances r from it (muons missing the can are dropped, and a
bundle keeps at least one), every muon's energy is drawn at the can, and bundles whose muons' energies sum to less
than a threshold are drawn again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from numl.sim.km3net.physics import C_LIGHT_M_PER_NS
from numl.utils.errors import ConfigError

# Multiplicity flux Phi(m; h, theta) = K(h, theta) / m^nu(h, theta):
# K = K0a h^K0b cos(theta) exp((K1a h + K1b) / cos(theta)),
# nu = (nu0a h^2 + nu0b h + nu0c) exp(nu1a exp(nu1b h) / cos(theta))
FLUX_K0 = (0.0072, -1.927)
FLUX_K1 = (-0.581, 0.034)
FLUX_NU0 = (-0.0771, 0.524, 2.068)
FLUX_NU1 = (0.03, 0.47)
#: the slant depth's attenuation beta X = BETA h / cos(theta) in the energy spectra, km.w.e.^-1
ENERGY_BETA = 0.42
# single muons: gamma = g0 ln h + g1, epsilon = e0a exp(e0b h) / cos(theta) + e1a h + e1b (TeV)
SINGLE_GAMMA = (-0.232, 3.961)
SINGLE_EPSILON = (0.0304, 0.359, -0.0077, 0.659)
# muons of a bundle, with m' = min(m, 4): gamma(r) = a r + b (1 - exp(q r) / 2), a = A0 h + A1,
# b = (B0a m' + B0b) h + B1a m' + B1b, q = Q0 h + Q1; epsilon(r) = c theta + d, c = (C0a h + C0b) exp(C1 r),
# d = (D0a h + D0b) r^(D1a h + D1b)
BUNDLE_GAMMA_A = (0.0033, 0.0079)
BUNDLE_GAMMA_B = (0.0407, 0.0283, -0.312, 6.124)
BUNDLE_GAMMA_Q = (0.0543, -0.365)
BUNDLE_EPSILON_C = (-0.069, 0.488, -0.117)
BUNDLE_EPSILON_D = (-0.398, 3.955, 0.012, -0.35)
# lateral distance: dN/dr = C r / (r + R0)^alpha, R0 = (alpha - 3) <R> / 2,
# <R> = (RHO0a m' + RHO0b) h^RHO1 / (exp((theta - THETA0) F) + 1), alpha = (A0a m' + A0b) exp((A1a m' + A1b) h)
LATERAL_MEAN = (-1.786, 28.26, -1.06)
LATERAL_THETA0_RAD, LATERAL_F = 1.3, 10.4
LATERAL_ALPHA = (-0.448, 4.969, 0.0194, 0.276)
#: the parametrisations' range of validity in vertical depth (km.w.e.) and zenith (deg)
DEPTH_RANGE_KMWE = (1.5, 5.0)
ZENITH_MAX_DEG = 85.0
#: MUPAGE's default mean sea-water density (g/cm^3): km below the surface to km.w.e.
SEA_WATER_DENSITY = 1.03
#: draws of a bundle's first muon until it enters the can (MUPAGE redraws it without limit)
MAX_FIRST_MUON_DRAWS = 1000


def bundle_flux(multiplicity, depth_kmwe, zenith_rad):
    """Flux of bundles of exactly `multiplicity` muons, m^-2 s^-1 sr^-1 (per unit area perpendicular to the axis)."""
    h, cos_t = np.asarray(depth_kmwe, dtype=np.float64), np.cos(zenith_rad)
    k = FLUX_K0[0] * h ** FLUX_K0[1] * cos_t * np.exp((FLUX_K1[0] * h + FLUX_K1[1]) / cos_t)
    return k / np.asarray(multiplicity, dtype=np.float64) ** multiplicity_slope(h, cos_t)


def multiplicity_slope(depth_kmwe, cos_zenith):
    """nu of the flux's fall with multiplicity, Phi ~ m^-nu."""
    h = np.asarray(depth_kmwe, dtype=np.float64)
    return ((FLUX_NU0[0] * h**2 + FLUX_NU0[1] * h + FLUX_NU0[2])
            * np.exp(FLUX_NU1[0] * np.exp(FLUX_NU1[1] * h) / cos_zenith))


def energy_spectrum(energy_tev, gamma, epsilon_tev, beta_x):
    """dN/dE (TeV^-1, normalised to 1 over E > 0) of the paper's spectral form, a power law of index gamma
    shifted by the energy lost over the slant depth X: (E + epsilon (1 - exp(-beta X)))^-gamma. (The paper and MUPAGE
    write it per unit log10 E, E ln(10) times this.)"""
    e, gamma = np.asarray(energy_tev, dtype=np.float64), np.asarray(gamma, dtype=np.float64)
    shift = (1.0 - np.exp(-beta_x)) * epsilon_tev
    return (gamma - 1.0) * shift ** (gamma - 1.0) * (e + shift) ** -gamma


def sample_energy_tev(rng: np.random.Generator, gamma, epsilon_tev, beta_x, range_tev) -> np.ndarray:
    """Energies (TeV) from energy_spectrum within range_tev, one per parameter set: its inverse CDF in closed form,
    F(E) = 1 - (s / (E + s))^(gamma - 1) with s the shift."""
    shift = (1.0 - np.exp(-np.asarray(beta_x))) * epsilon_tev
    lo, hi = (1.0 - (shift / (bound + shift)) ** (gamma - 1.0) for bound in range_tev)
    u = lo + rng.random(np.broadcast(gamma, shift).shape) * (hi - lo)
    return shift * (1.0 - u) ** (-1.0 / (gamma - 1.0)) - shift


def single_muon_spectrum_parameters(depth_kmwe, zenith_rad):
    """(gamma, epsilon (TeV), beta X) of a lone muon's energy spectrum."""
    h, cos_t = np.asarray(depth_kmwe, dtype=np.float64), np.cos(zenith_rad)
    gamma = SINGLE_GAMMA[0] * np.log(h) + SINGLE_GAMMA[1]
    e0a, e0b, e1a, e1b = SINGLE_EPSILON
    epsilon = e0a * np.exp(e0b * h) / cos_t + e1a * h + e1b
    return gamma, epsilon, ENERGY_BETA * h / cos_t


def bundle_muon_spectrum_parameters(lateral_m, multiplicity, depth_kmwe, zenith_rad):
    """(gamma, epsilon (TeV), beta X) of the energy spectrum of a bundle's muon `lateral_m` from the axis."""
    r, h = np.asarray(lateral_m, dtype=np.float64), np.asarray(depth_kmwe, dtype=np.float64)
    m = np.minimum(multiplicity, 4)
    b0a, b0b, b1a, b1b = BUNDLE_GAMMA_B
    gamma = ((BUNDLE_GAMMA_A[0] * h + BUNDLE_GAMMA_A[1]) * r
             + ((b0a * m + b0b) * h + b1a * m + b1b)
             * (1.0 - 0.5 * np.exp((BUNDLE_GAMMA_Q[0] * h + BUNDLE_GAMMA_Q[1]) * r)))
    c0a, c0b, c1 = BUNDLE_EPSILON_C
    d0a, d0b, d1a, d1b = BUNDLE_EPSILON_D
    # r^(negative power) diverges on the axis; a muon exactly on it (probability 0) takes 1 cm
    epsilon = ((c0a * h + c0b) * np.exp(c1 * r) * zenith_rad
               + (d0a * h + d0b) * np.maximum(r, 0.01) ** (d1a * h + d1b))
    return gamma, epsilon, ENERGY_BETA * h / np.cos(zenith_rad)


def lateral_spread_parameters(multiplicity, depth_kmwe, zenith_rad):
    """(alpha, R0 (m)) of the lateral distribution dN/dr ~ r / (r + R0)^alpha of a bundle's muons."""
    m, h = np.minimum(multiplicity, 4), np.asarray(depth_kmwe, dtype=np.float64)
    mean_r = ((LATERAL_MEAN[0] * m + LATERAL_MEAN[1]) * h ** LATERAL_MEAN[2]
              / (np.exp((zenith_rad - LATERAL_THETA0_RAD) * LATERAL_F) + 1.0))
    a0a, a0b, a1a, a1b = LATERAL_ALPHA
    alpha = (a0a * m + a0b) * np.exp((a1a * m + a1b) * h)
    return alpha, 0.5 * (alpha - 3.0) * mean_r


def sample_from_density(rng: np.random.Generator, grid: np.ndarray, density: np.ndarray) -> np.ndarray:
    """One value per row of `density` (N, G), tabulated on `grid` (G,): inverse CDF, linear between grid points."""
    cdf = np.concatenate([np.zeros((len(density), 1)),
                          np.cumsum(0.5 * (density[:, 1:] + density[:, :-1]) * np.diff(grid), axis=1)], axis=1)
    target = rng.random(len(density)) * cdf[:, -1]
    upper = np.clip((cdf < target[:, None]).sum(axis=1), 1, len(grid) - 1)
    rows = np.arange(len(density))
    lo_cdf, hi_cdf = cdf[rows, upper - 1], cdf[rows, upper]
    frac = np.where(hi_cdf > lo_cdf, (target - lo_cdf) / np.maximum(hi_cdf - lo_cdf, 1e-300), 0.0)
    return grid[upper - 1] + frac * (grid[upper] - grid[upper - 1])


@dataclass(frozen=True)
class BundleGenerator:
    """Where and how bundles are drawn: the can (a vertical cylinder, detector coordinates, m), the site's depth
    (the seabed's depth below the sea surface, m, and its z in detector coordinates), and MUPAGE's ranges."""

    can_centre_xy: tuple[float, float]
    can_radius_m: float
    can_z_min_m: float
    can_z_max_m: float
    seabed_depth_m: float
    seabed_z_m: float
    bundle_energy_min_gev: float = 1.0  # bundles whose muons (at the can) carry less are drawn again
    multiplicity_max: int = 100
    zenith_max_deg: float = ZENITH_MAX_DEG
    lateral_max_m: float = 100.0  # MUPAGE's default Rmax
    muon_energy_range_gev: tuple[float, float] = (1.0, 5.0e5)  # MUPAGE's default Emin, Emax
    water_density: float = SEA_WATER_DENSITY

    def __post_init__(self):
        low, high = sorted(self.depth_kmwe(np.array([self.can_z_max_m, self.can_z_min_m])))
        if low < DEPTH_RANGE_KMWE[0] or high > DEPTH_RANGE_KMWE[1]:
            raise ConfigError(f"data.events.atmospheric_seabed_depth_m={self.seabed_depth_m:g}: the can spans "
                              f"{low:.2f}-{high:.2f} km.w.e. of vertical depth; MUPAGE's parametrisation holds for "
                              f"{DEPTH_RANGE_KMWE[0]}-{DEPTH_RANGE_KMWE[1]}")
        if not 0.0 < self.zenith_max_deg <= ZENITH_MAX_DEG:
            raise ConfigError(f"atmospheric muons: zenith_max_deg={self.zenith_max_deg} must lie in (0, "
                              f"{ZENITH_MAX_DEG}] (the parametrisation's range)")

    def depth_kmwe(self, z_m):
        return (self.seabed_depth_m - (np.asarray(z_m) - self.seabed_z_m)) * 1e-3 * self.water_density

    def projected_areas_m2(self, cos_zenith):
        """(top disk, side) areas of the can seen along a direction of this zenith."""
        height = self.can_z_max_m - self.can_z_min_m
        top = np.pi * self.can_radius_m**2 * cos_zenith
        return top, 2.0 * self.can_radius_m * height * np.sqrt(1.0 - cos_zenith**2)

    def multiplicity_proposal(self) -> tuple[float, np.ndarray]:
        """Multiplicities are proposed with probability ~ m^-nu_min, nu_min the flux's smallest slope over the can's
        depths and the zenith range (vertical, nu grows with zenith), so the acceptance ratio m^(nu_min - nu) <= 1
        rejects little: (nu_min, cumulative proposal probabilities of m = 1 .. multiplicity_max)."""
        depths = self.depth_kmwe(np.linspace(self.can_z_min_m, self.can_z_max_m, 64))
        nu_min = float(np.min(multiplicity_slope(depths, 1.0)))
        weights = np.arange(1, self.multiplicity_max + 1, dtype=np.float64) ** -nu_min
        return nu_min, np.cumsum(weights)

    def propose(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Zenith uniform, multiplicity from multiplicity_proposal, azimuth uniform, the axis's impact point uniform
        over the can's projected area; each with its weight flux x projected area x sin(zenith) / proposal
        probability of m, which max_weight bounds."""
        zenith = rng.uniform(0.0, np.radians(self.zenith_max_deg), n)
        azimuth = rng.uniform(0.0, 2.0 * np.pi, n)  # of the direction the bundle goes to
        nu_min, cumulative = self.multiplicity_proposal()
        multiplicity = 1 + np.minimum(np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right"),
                                      self.multiplicity_max - 1)
        cos_t, sin_t = np.cos(zenith), np.sin(zenith)
        direction = np.stack([sin_t * np.cos(azimuth), sin_t * np.sin(azimuth), -cos_t], axis=1)
        top_area, side_area = self.projected_areas_m2(cos_t)
        on_top = rng.random(n) * (top_area + side_area) < top_area
        # top: uniform on the disk; side: uniform over the lit half's projection (offset across the direction
        # uniform in [-R, R], height uniform)
        radius = self.can_radius_m * np.sqrt(rng.random(n))
        angle = rng.uniform(0.0, 2.0 * np.pi, n)
        side_angle = azimuth + np.pi + np.arcsin(rng.uniform(-1.0, 1.0, n))
        x = np.where(on_top, radius * np.cos(angle), self.can_radius_m * np.cos(side_angle))
        y = np.where(on_top, radius * np.sin(angle), self.can_radius_m * np.sin(side_angle))
        z = np.where(on_top, self.can_z_max_m, rng.uniform(self.can_z_min_m, self.can_z_max_m, n))
        point = np.stack([x + self.can_centre_xy[0], y + self.can_centre_xy[1], z], axis=1)
        depth = self.depth_kmwe(z)
        weight = (bundle_flux(multiplicity, depth, zenith) * multiplicity.astype(np.float64) ** nu_min
                  * cumulative[-1] * (top_area + side_area) * sin_t)
        return {"zenith": zenith, "direction": direction, "multiplicity": multiplicity, "axis_point": point,
                "depth_kmwe": depth, "weight": weight}

    def max_weight(self) -> float:
        """A bound on the proposal weight: the flux's normalisation K falls with depth and zenith (largest vertically
        at the can's top), m^(nu_min - nu) <= 1 (multiplicity_proposal), and the projected area times sin(zenith),
        top cos + side sin times sin, never exceeds hypot(top, side)."""
        top, side = np.pi * self.can_radius_m**2, 2.0 * self.can_radius_m * (self.can_z_max_m - self.can_z_min_m)
        _, cumulative = self.multiplicity_proposal()
        largest_flux = float(bundle_flux(1, self.depth_kmwe(self.can_z_max_m), 0.0))
        return largest_flux * float(np.hypot(top, side)) * cumulative[-1]

    def proposal_volume(self) -> float:
        """Measure of the proposal space over which the weight is averaged: zenith range (rad) x azimuth (2 pi)."""
        return np.radians(self.zenith_max_deg) * 2.0 * np.pi

    def entry_points(self, start_m: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the lines through `start_m` (N, 3) along `direction` (N, 3, going down; any point of the line will
        do) enter the can, through its top or its side: the points, and whether each line meets the can at all."""
        p = start_m[:, :2] - np.asarray(self.can_centre_xy)
        d = direction
        # the top: z = z_max
        s_top = (self.can_z_max_m - start_m[:, 2]) / d[:, 2]
        xy_top = p + s_top[:, None] * d[:, :2]
        hits_top = np.einsum("ij,ij->i", xy_top, xy_top) <= self.can_radius_m**2
        a = np.einsum("ij,ij->i", d[:, :2], d[:, :2])
        b = np.einsum("ij,ij->i", p, d[:, :2])
        c = np.einsum("ij,ij->i", p, p) - self.can_radius_m**2
        disc = b**2 - a * c
        s_side = (-b - np.sqrt(np.clip(disc, 0.0, None))) / np.maximum(a, 1e-300)  # the first crossing
        z_side = start_m[:, 2] + s_side * d[:, 2]
        hits_side = (disc >= 0.0) & (a > 0.0) & (z_side >= self.can_z_min_m) & (z_side <= self.can_z_max_m)
        s = np.where(hits_top, s_top, s_side)
        return start_m + s[:, None] * d, hits_top | hits_side

    def sample(self, rng: np.random.Generator, n_bundles: int, batch: int = 200_000) -> BundleSample:
        """`n_bundles` bundles above the energy threshold, and the rate (Hz) such bundles arrive at."""
        bundle_parts: list[dict[str, np.ndarray]] = []
        muon_parts: list[dict[str, np.ndarray]] = []
        n_kept, n_proposed = 0, 0
        bound = self.max_weight()
        while n_kept < n_bundles:
            proposal = self.propose(rng, batch)
            n_proposed += batch
            accepted = rng.random(batch) * bound < proposal["weight"]
            bundles, muons = self.muons({k: v[accepted] for k, v in proposal.items()}, rng)
            above = bundles["bundle_energy_gev"] >= self.bundle_energy_min_gev
            kept_muons = above[muons["bundle"]] & muons["in_can"]
            muons = {k: v[kept_muons] for k, v in muons.items()}
            muons["bundle"] = n_kept + (np.cumsum(above) - 1)[muons["bundle"]]
            bundle_parts.append({k: v[above] for k, v in bundles.items()})
            muon_parts.append(muons)
            n_kept += int(above.sum())
        bundles = {k: np.concatenate([b[k] for b in bundle_parts])[:n_bundles] for k in bundle_parts[0]}
        muons = {k: np.concatenate([m[k] for m in muon_parts]) for k in muon_parts[0]}
        muons = {k: v[muons["bundle"] < n_bundles] for k, v in muons.items()}
        rate_hz = bound * self.proposal_volume() * n_kept / n_proposed
        return BundleSample(bundles, muons, rate_hz, n_kept)

    def muons(self, bundles: dict[str, np.ndarray], rng: np.random.Generator
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each bundle's muons (one row per muon, `bundle` its bundle's row): lateral distance, where it enters the
        can (in_can: whether it does), its energy there and its time offset. Adds bundle_energy_gev (the muons in
        the can) and n_muons (in the can) to the bundles."""
        bundle_of = np.repeat(np.arange(len(bundles["multiplicity"])), bundles["multiplicity"])
        zenith, depth = bundles["zenith"][bundle_of], bundles["depth_kmwe"][bundle_of]
        multiplicity, direction = bundles["multiplicity"][bundle_of], bundles["direction"][bundle_of]
        many = multiplicity > 1  # a lone muon has no lateral distance
        alpha, r0 = lateral_spread_parameters(multiplicity, depth, zenith)
        r_grid = np.linspace(0.0, self.lateral_max_m, 201)
        # the muon's offset in the plane across the axis
        up = np.where(np.abs(direction[:, 2:3]) < 0.99, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
        across_1 = np.cross(direction, up)
        across_1 /= np.linalg.norm(across_1, axis=1, keepdims=True)
        across_2 = np.cross(direction, across_1)
        axis_point = bundles["axis_point"][bundle_of]
        lateral = np.zeros(len(bundle_of))
        entry, in_can = axis_point.copy(), np.ones(len(bundle_of), dtype=bool)
        first = np.r_[True, bundle_of[1:] != bundle_of[:-1]]
        # every muon of a bundle gets a lateral distance and an angle around the axis; a bundle's first muon is drawn
        # again until it enters the can, as MUPAGE does, so every bundle keeps one (a first muon still missing after
        # MAX_FIRST_MUON_DRAWS draws, which needs a can far narrower than the bundle, takes the axis itself)
        rows = np.flatnonzero(many)
        for _ in range(MAX_FIRST_MUON_DRAWS):
            if len(rows) == 0:
                break
            lateral[rows] = sample_from_density(rng, r_grid, r_grid / (r_grid + r0[rows, None]) ** alpha[rows, None])
            beta = rng.uniform(0.0, 2.0 * np.pi, len(rows))
            offset = np.cos(beta)[:, None] * across_1[rows] + np.sin(beta)[:, None] * across_2[rows]
            entry[rows], in_can[rows] = self.entry_points(axis_point[rows] + lateral[rows, None] * offset,
                                                          direction[rows])
            rows = rows[first[rows] & ~in_can[rows]]
        lateral[rows], entry[rows], in_can[rows] = 0.0, axis_point[rows], True
        # arrival time relative to the bundle's plane front through the axis's impact point
        time_ns = np.einsum("ij,ij->i", entry - axis_point, direction) / C_LIGHT_M_PER_NS
        gamma, epsilon, beta_x = single_muon_spectrum_parameters(depth, zenith)
        gamma[many], epsilon[many], beta_x[many] = bundle_muon_spectrum_parameters(
            lateral[many], multiplicity[many], depth[many], zenith[many])
        energy_gev = 1e3 * sample_energy_tev(rng, gamma, epsilon, beta_x, np.asarray(self.muon_energy_range_gev) / 1e3)
        energy_gev[~in_can] = 0.0
        n = len(bundles["multiplicity"])
        bundles = {**bundles, "bundle_energy_gev": np.bincount(bundle_of, energy_gev, minlength=n),
                   "n_muons": np.bincount(bundle_of, in_can, minlength=n).astype(np.int64)}
        muons = {"bundle": bundle_of, "entry_m": entry, "energy_gev": energy_gev, "time_ns": time_ns,
                 "lateral_m": lateral, "in_can": in_can}
        return bundles, muons


@dataclass
class BundleSample:
    """Bundles (one row each: zenith, direction, multiplicity drawn, axis_point, depth_kmwe, bundle_energy_gev,
    n_muons in the can) and their muons in the can (one row each; `bundle` its bundle's row), with the rate (Hz) at
    which bundles above the threshold cross the can and how many the rate estimate counted."""

    bundles: dict[str, np.ndarray]
    muons: dict[str, np.ndarray]
    rate_hz: float
    n_counted: int

    @property
    def rate_uncertainty_hz(self) -> float:
        return self.rate_hz / np.sqrt(max(self.n_counted, 1))


def read_mupage_bundles(path) -> dict[str, np.ndarray]:
    """The bundles of a KM3NeT MUPAGE file in km3pipe's HDF5 format (its `mc_tracks` table, one muon per row at the
    can, grouped by event), as BundleSample names them: per bundle n_muons, cos_zenith (1: going straight down) and
    bundle_energy_gev; per muon muon_energy_gev."""
    import h5py

    with h5py.File(path) as f:
        tracks = f["mc_tracks"][:]
    _, bundle, n_muons = np.unique(tracks["group_id"], return_inverse=True, return_counts=True)
    first = np.r_[True, tracks["group_id"][1:] != tracks["group_id"][:-1]]
    return {"n_muons": n_muons, "cos_zenith": -tracks["dir_z"][first], "muon_energy_gev": tracks["energy"],
            "bundle_energy_gev": np.bincount(bundle, tracks["energy"])}


def sample_summary(sample: BundleSample) -> dict[str, np.ndarray]:
    """A sample's bundles under read_mupage_bundles' names."""
    return {"n_muons": sample.bundles["n_muons"], "cos_zenith": -sample.bundles["direction"][:, 2],
            "muon_energy_gev": sample.muons["energy_gev"], "bundle_energy_gev": sample.bundles["bundle_energy_gev"]}


#: KM3NeT's MUPAGE files in km3net-testdata (their headers): ARCA site, seabed 3450 m below the surface at z = 0, can
#: radius 1018.4 m from z = 0 to 957 m, zenith 0-85 deg; (path, bundle threshold (GeV): the file's smallest bundle
#: energy rounded down, bundles generated, livetime (s))
KM3NET_TESTDATA_MUPAGE = {
    "atmospheric_muons_sample.h5 (> 10 TeV)": ("hdf5/atmospheric_muons_sample.h5", 1e4, 25_000, 6_660.0),
    "mupage_ARCA.h5 (> 50 TeV)": ("hdf5/mupage_ARCA.h5", 5e4, 10_000, 106_000.0),
}
#: multiplicity bins of the chi-square comparison (a KS test is conservative on a discrete variable)
MULTIPLICITY_EDGES = (1, 2, 3, 4, 6, 11, 21, 10_000)


@dataclass
class MupageComparison:
    rate_ratio: float  # numl's rate of bundles above the threshold over the file's
    rate_ratio_error: float  # numl's statistical error on it
    file_bundles: int
    p_values: dict[str, float]  # KS for zenith and energies, chi-square for the multiplicity


def compare_with_km3net_mupage_file(name: str, n_bundles: int, seed: int = 1) -> MupageComparison:
    """numl's bundles drawn with the settings of a KM3NeT_TESTDATA_MUPAGE file, against it."""
    from km3net_testdata import data_path
    from scipy.stats import chi2_contingency, ks_2samp

    path, threshold_gev, generated, livetime_s = KM3NET_TESTDATA_MUPAGE[name]
    generator = BundleGenerator((0.0, 0.0), 1018.4, 0.0, 957.0, seabed_depth_m=3450.0, seabed_z_m=0.0,
                                bundle_energy_min_gev=threshold_gev)
    sample = generator.sample(np.random.default_rng(seed), n_bundles)
    ours, theirs = sample_summary(sample), read_mupage_bundles(data_path(path))
    p_values = {k: float(ks_2samp(ours[k], theirs[k]).pvalue) for k in ("cos_zenith", "muon_energy_gev",
                                                                        "bundle_energy_gev")}
    counts = np.array([np.histogram(x["n_muons"], MULTIPLICITY_EDGES)[0] for x in (ours, theirs)])
    p_values["n_muons"] = float(chi2_contingency(counts[:, counts.sum(axis=0) > 0]).pvalue)
    file_rate = generated / livetime_s
    return MupageComparison(sample.rate_hz / file_rate, sample.rate_uncertainty_hz / file_rate,
                            len(theirs["n_muons"]), p_values)
