"""Deep-inelastic nu_mu CC scattering on an isoscalar nucleon at rest: Bjorken x and y, the muon and the hadrons.

Model: the leading-order quark-parton model (Gandhi, Quigg, Reno, Sarcevic, Astropart. Phys. 5 (1996) 81, eq. 1-3),
    d2sigma/dx dy = (2 G_F^2 M E / pi) (M_W^2 / (Q^2 + M_W^2))^2 [x q(x, Q^2) + x qbar(x, Q^2) (1 - y)^2],
    q = (u_v + d_v) / 2 + (u_s + d_s) / 2 + s,    qbar = (u_s + d_s) / 2 + c,    Q^2 = 2 M E x y,
with the GRV 94 LO parton densities in their published analytic parameterisation (M. Glueck, E. Reya, A. Vogt,
Z. Phys. C67 (1995) 433; the coefficients below are the paper's). The b quark (b -> t is closed below TeV
energies), the charm mass (slow rescaling) and nuclear effects (Fermi motion, shadowing) are left out. GRV 94 is
fitted for 0.4 <= Q^2 <= 1e6 GeV^2 and 1e-5 <= x < 1; below Q^2 = 0.4 GeV^2 the densities are frozen at 0.4, and
the DIS continuum is extrapolated down to the pion production threshold W = M + m_pi (quasi-elastic scattering
and resonances are not modelled separately: at 3-10 GeV they are 20-50 % of the CC rate). The muon's angle to the
neutrino follows from exact kinematics with the muon mass; the hadronic system takes the rest of the momentum.

Checks (tests/test_km3net_kinematics.py): <y> against Gandhi et al.'s table, sigma_CC / E against the PDG
world average, and the nu-mu angle and E_mu / E_nu against the GENIE events of the official ORCA6 file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

G_FERMI_GEV2 = 1.1663787e-5  # GeV^-2 (PDG)
NUCLEON_MASS_GEV = 0.938919  # (m_p + m_n) / 2, isoscalar target
W_MASS_GEV = 80.379
MUON_MASS_GEV = 0.1056584
PION_MASS_GEV = 0.13957
GEV2_TO_CM2 = 0.3893794e-27  # (hbar c)^2: 1 GeV^-2 = 0.389 mb
W_MIN_GEV = NUCLEON_MASS_GEV + PION_MASS_GEV  # inelastic threshold
Q2_MIN_PDF_GEV2 = 0.4  # GRV 94's lower limit; densities frozen below
X_MIN = 1e-5  # GRV 94's lower limit

# sampling grid in (ln x, y): cells of 0.115 in ln x and 0.01 in y; the sampled value is uniform in its cell
_N_LNX, _N_Y = 100, 100
_LNX_EDGES = np.linspace(np.log(X_MIN), 0.0, _N_LNX + 1)
_Y_EDGES = np.linspace(0.0, 1.0, _N_Y + 1)
_LNX_MID = 0.5 * (_LNX_EDGES[1:] + _LNX_EDGES[:-1])
_Y_MID = 0.5 * (_Y_EDGES[1:] + _Y_EDGES[:-1])


def _grv_valence(x, s, n, ak, bk, a, b, c, d):
    return n * x**ak * (1.0 + a * x**bk + x * (b + c * np.sqrt(x))) * (1.0 - x) ** d


def _grv_light_sea(x, s, al, be, ak, bk, a, b, c, d, e, es):
    lx = np.log(1.0 / x)
    return (x**ak * (a + x * (b + x * c)) * lx**bk + s**al * np.exp(-e + np.sqrt(es * s**be * lx))) * (1.0 - x) ** d


def _grv_heavy_sea(x, s, sth, al, be, ak, a, b, d, e, es):
    lx = np.log(1.0 / x)
    ds = np.clip(s - sth, 0.0, None)
    value = (ds**al / lx**ak * (1.0 + a * np.sqrt(x) + b * x) * (1.0 - x) ** d
             * np.exp(-e + np.sqrt(es * s**be * lx)))
    return np.where(s > sth, value, 0.0)


def grv94_lo(x: np.ndarray, q2_gev2: np.ndarray) -> dict[str, np.ndarray]:
    """GRV 94 LO momentum densities x f(x, Q^2) of the proton: u_v, d_v, ubar, dbar, s (= sbar), c (= cbar)."""
    x = np.clip(np.asarray(x, dtype=np.float64), X_MIN, 1.0 - 1e-12)
    q2 = np.clip(np.asarray(q2_gev2, dtype=np.float64), Q2_MIN_PDF_GEV2, 1e6)
    mu2, lam2 = 0.23, 0.2322**2
    s = np.log(np.log(q2 / lam2) / np.log(mu2 / lam2))
    ds, s2 = np.sqrt(s), s * s
    uv = _grv_valence(x, s, 2.284 + 0.802 * s + 0.055 * s2, 0.590 - 0.024 * s, 0.131 + 0.063 * s,
                      -0.449 - 0.138 * s - 0.076 * s2, 0.213 + 2.669 * s - 0.728 * s2, 8.854 - 9.135 * s + 1.979 * s2,
                      2.997 + 0.753 * s - 0.076 * s2)
    dv = _grv_valence(x, s, 0.371 + 0.083 * s + 0.039 * s2, 0.376, 0.486 + 0.062 * s,
                      -0.509 + 3.310 * s - 1.248 * s2, 12.41 - 10.52 * s + 2.267 * s2, 6.373 - 6.208 * s + 1.418 * s2,
                      3.691 + 0.799 * s - 0.071 * s2)
    # x (dbar - ubar) and x (ubar + dbar)
    delta = _grv_valence(x, s, 0.082 + 0.014 * s + 0.008 * s2, 0.409 - 0.005 * s, 0.799 + 0.071 * s,
                         -38.07 + 36.13 * s - 0.656 * s2, 90.31 - 74.15 * s + 7.645 * s2, 0.0,
                         7.486 + 1.217 * s - 0.159 * s2)
    light_sea = _grv_light_sea(x, s, 1.451, 0.271, 0.410 - 0.232 * s, 0.534 - 0.457 * s, 0.890 - 0.140 * s, -0.981,
                               0.320 + 0.683 * s, 4.752 + 1.164 * s + 0.286 * s2, 4.119 + 1.713 * s, 0.682 + 2.978 * s)
    strange = _grv_heavy_sea(x, s, 0.0, 0.914, 0.577, 1.798 - 0.596 * s, -5.548 + 3.669 * ds - 0.616 * s,
                             18.92 - 16.73 * ds + 5.168 * s, 6.379 - 0.350 * s + 0.142 * s2, 3.981 + 1.638 * s, 6.402)
    charm = _grv_heavy_sea(x, s, 0.888, 1.01, 0.37, 0.0, 0.0, 4.24 - 0.804 * s, 3.46 - 1.076 * s, 4.61 + 1.49 * s,
                           2.555 + 1.961 * s)
    return {"uv": uv, "dv": dv, "ubar": 0.5 * (light_sea - delta), "dbar": 0.5 * (light_sea + delta),
            "s": strange, "c": charm}


def muon_cos_theta(energy_gev: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """cos of the muon's angle to the neutrino from Q^2 = 2 E (E_mu - p_mu cos theta) - m_mu^2 (exact, muon mass;
    massless neutrino, nucleon at rest). NaN where (x, y) is not reachable (E_mu < m_mu or |cos| > 1)."""
    energy_gev, x, y = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (energy_gev, x, y)))
    e_mu = (1.0 - y) * energy_gev
    p_mu = np.sqrt(np.clip(e_mu**2 - MUON_MASS_GEV**2, 0.0, None))
    q2 = 2.0 * NUCLEON_MASS_GEV * energy_gev * x * y
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = (e_mu - (q2 + MUON_MASS_GEV**2) / (2.0 * energy_gev)) / p_mu
    return np.where((e_mu > MUON_MASS_GEV) & (np.abs(cos) <= 1.0), cos, np.nan)


def d2sigma_dxdy_cm2(energy_gev: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """nu_mu CC d2sigma / dx dy per nucleon of an isoscalar target (cm^2), zero outside the physical region
    (W < M + m_pi, or no real muon angle)."""
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    q2 = 2.0 * NUCLEON_MASS_GEV * energy_gev * x * y
    w2 = NUCLEON_MASS_GEV**2 + 2.0 * NUCLEON_MASS_GEV * energy_gev * y * (1.0 - x)
    f = grv94_lo(x, q2)
    xq = 0.5 * (f["uv"] + f["dv"]) + 0.5 * (f["ubar"] + f["dbar"]) + f["s"]
    xqbar = 0.5 * (f["ubar"] + f["dbar"]) + f["c"]
    propagator = (W_MASS_GEV**2 / (q2 + W_MASS_GEV**2)) ** 2
    value = (2.0 * G_FERMI_GEV2**2 * NUCLEON_MASS_GEV * energy_gev / np.pi * GEV2_TO_CM2 * propagator
             * (xq + xqbar * (1.0 - y) ** 2))
    allowed = (w2 >= W_MIN_GEV**2) & np.isfinite(muon_cos_theta(energy_gev, x, y)) & (x < 1.0)
    return np.where(allowed, value, 0.0)


def _cell_weights(energy_gev: float) -> np.ndarray:
    """d2sigma integrated over each (ln x, y) cell (midpoint rule), shape (_N_LNX, _N_Y), cm^2."""
    x = np.exp(_LNX_MID)[:, None]
    cell = np.diff(_LNX_EDGES)[:, None] * np.diff(_Y_EDGES)[None, :]
    return d2sigma_dxdy_cm2(energy_gev, x, _Y_MID[None, :]) * x * cell  # dx = x d(ln x)


def sigma_cc_cm2(energy_gev: float) -> float:
    """Total nu_mu CC DIS cross section per nucleon (cm^2) on the sampling grid."""
    return float(_cell_weights(energy_gev).sum())


def mean_y(energy_gev: float) -> float:
    """Mean inelasticity <y> of nu_mu CC DIS at this energy."""
    w = _cell_weights(energy_gev)
    return float((w * _Y_MID[None, :]).sum() / w.sum())


_LOG10E_STEP = 0.01  # energy nodes of the cached sampling tables (2.3 % apart)


@lru_cache(maxsize=4096)
def _node_weights(node: int) -> np.ndarray:
    return _cell_weights(10.0 ** (node * _LOG10E_STEP)).ravel()


def sample_xy(rng: np.random.Generator, energy_gev: float) -> tuple[float, float]:
    """Bjorken x and y of one nu_mu CC DIS interaction at this neutrino energy, drawn from d2sigma/dx dy: a cell of
    the (ln x, y) grid by its integral (interpolated linearly in log E between tables 0.01 apart in log10 E),
    then a point uniform inside it, redrawn if it is unphysical at this energy."""
    position = np.log10(energy_gev) / _LOG10E_STEP
    node = int(np.floor(position))
    frac = position - node
    weights = (1.0 - frac) * _node_weights(node) + frac * _node_weights(node + 1)
    cdf = np.cumsum(weights)
    for _ in range(1000):
        cell = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        i, j = divmod(min(cell, len(weights) - 1), _N_Y)
        x = float(np.exp(rng.uniform(_LNX_EDGES[i], _LNX_EDGES[i + 1])))
        y = float(rng.uniform(_Y_EDGES[j], _Y_EDGES[j + 1]))
        if d2sigma_dxdy_cm2(energy_gev, x, y) > 0.0:
            return x, y
    raise RuntimeError(f"no physical DIS kinematics drawn at E = {energy_gev} GeV")


def orthonormal_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to `direction` and to each other."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(direction, u)


@dataclass(frozen=True)
class Interaction:
    """One nu_mu CC interaction: Bjorken x, y, Q^2, the muon (energy, unit direction) and the hadronic system
    (energy transfer nu = y E, unit direction of its momentum)."""

    x: float
    y: float
    q2_gev2: float
    muon_energy_gev: float
    muon_direction: np.ndarray
    hadron_energy_gev: float
    hadron_direction: np.ndarray


def sample_interaction(rng: np.random.Generator, energy_gev: float, nu_direction: np.ndarray) -> Interaction:
    """x, y from the DIS cross section; the muon at the exact angle to the neutrino, its azimuth uniform; the
    hadrons take momentum p_nu - p_mu and energy y E (the nucleon's rest mass is not shower energy)."""
    x, y = sample_xy(rng, energy_gev)
    cos = float(muon_cos_theta(energy_gev, x, y))
    sin = float(np.sqrt(max(0.0, 1.0 - cos * cos)))
    phi = rng.uniform(0.0, 2.0 * np.pi)
    u, v = orthonormal_basis(nu_direction)
    muon_dir = cos * nu_direction + sin * (np.cos(phi) * u + np.sin(phi) * v)
    muon_dir /= np.linalg.norm(muon_dir)
    e_mu = (1.0 - y) * energy_gev
    p_mu = float(np.sqrt(max(e_mu**2 - MUON_MASS_GEV**2, 0.0)))
    p_had = energy_gev * nu_direction - p_mu * muon_dir
    norm = float(np.linalg.norm(p_had))
    hadron_dir = p_had / norm if norm > 0 else nu_direction.copy()
    return Interaction(x=x, y=y, q2_gev2=2.0 * NUCLEON_MASS_GEV * energy_gev * x * y, muon_energy_gev=e_mu,
                       muon_direction=muon_dir, hadron_energy_gev=y * energy_gev, hadron_direction=hadron_dir)


def sample_at_energies(rng: np.random.Generator, energies_gev: np.ndarray, per_energy: int
                       ) -> dict[str, np.ndarray]:
    """`per_energy` interactions at each of `energies_gev` (e.g. a file's neutrino energies, to compare at the same
    spectrum): Bjorken x and y, the nu-mu angle (deg) and E_mu / E_nu, as flat arrays."""
    axis = np.array([0.0, 0.0, 1.0])
    rows = [sample_interaction(rng, float(e), axis) for e in np.asarray(energies_gev) for _ in range(per_energy)]
    return {"bjorken_x": np.array([r.x for r in rows]), "bjorken_y": np.array([r.y for r in rows]),
            "angle_deg": np.degrees(np.arccos(np.clip([r.muon_direction[2] for r in rows], -1.0, 1.0))),
            "muon_fraction": np.array([r.muon_energy_gev for r in rows]) / np.repeat(energies_gev, per_energy)}
