"""Cherenkov light in sea water: constants and the geometry of direct photons from muon tracks and showers.

Sources in ../shared/PHYSICS.md (KM3NeT): phase index n = 1.3499 and group velocity 0.2173 m/ns (km3pipe
constants), the arrival-time formula of km3pipe ``physics.cherenkov``, 3.4e4 photons per metre of muon
(300-600 nm), 4.7 m of equivalent track per GeV of shower, dE/dx = a + b E with a = 0.27 GeV/m,
b = 3.4e-4 /m. The ionisation loss a follows the Bethe-Bloch formula by default (MUON_ENERGY_LOSS_MODELS), written
here because PROPOSAL, the kept muon propagator that computes it, has no wheel for this Python on PyPI (7.6.2 is an
sdist) and builds its C++ dependencies through Conan, whose package server this machine cannot reach.

The muon's light beyond its own Cherenkov cone, as KM3NeT's Jpp splits it (its muon PDFs and expected
photo-electrons: light from the muon, from delta rays, and from EM showers of energy loss proportional to E):
delta rays as an equivalent EM-shower energy per metre, Jpp's fit in JPhysics/JConstants (getDeltaRaysFromMuon,
a cubic in log10 E in MeV cm^2/g, times the density of sea water 1.038 g/cm^3), and the radiative losses b E.
About half of b in water is e+e- pair production (Groom, Mokhov & Striganov 2001, Atom. Data Nucl. Data Tables 78:
b_pair ~ 1.6 of b ~ 3.2-3.4 x 1e-6 cm^2/g near 100 GeV), whose losses are small and frequent; the rest,
bremsstrahlung and photonuclear, comes in rarer large losses. The fit's four coefficients are carried here because
jppy, KM3NeT's Python binding of Jpp (a C++ build, last released 2022), exposes Jpp's constants and energy loss
(JGeaneWater) but not the delta-ray function.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import gammainc, gammaincinv

from numl.utils.errors import check_choice

C_LIGHT_M_PER_NS = 0.299792458
N_PHASE_WATER = 1.3499
V_GROUP_M_PER_NS = 0.2173
COS_CHERENKOV = 1.0 / N_PHASE_WATER
THETA_CHERENKOV_RAD = float(np.arccos(COS_CHERENKOV))  # 42.2 deg
SIN_CHERENKOV = float(np.sin(THETA_CHERENKOV_RAD))
TAN_CHERENKOV = float(np.tan(THETA_CHERENKOV_RAD))

MUON_PHOTONS_PER_M = 3.4e4
SHOWER_TRACK_LENGTH_M_PER_GEV = 4.7
MUON_DEDX_A_GEV_PER_M = 0.27
MUON_DEDX_B_PER_M = 3.4e-4
DENSITY_SEA_WATER_G_PER_CM3 = 1.038
#: Jpp's delta-ray fit: equivalent EM-shower energy loss (MeV cm^2/g) = sum_k c_k log10(E/GeV)^k, above 0.13078 GeV
DELTA_RAY_COEFFICIENTS = (3.186e-01, 3.384e-01, -2.759e-02, 1.630e-03)
DELTA_RAY_MIN_ENERGY_GEV = 0.13078
#: share of the radiative energy loss b E that is e+e- pair production (approximate, see the module docstring)
PAIR_PRODUCTION_SHARE = 0.5
#: Genuine K-40 coincidences: one decay's Cherenkov light seen by two PMTs of one DOM. Rate (Hz) of a PMT pair against
#: the cosine c of the angle between their axes, exp(p0 + p1 c + p2 c^2 + p3 c^3): KM3NeT's simulated angular
#: distribution, as km3pipe's intra-DOM K-40 calibration carries it (km3pipe/calib, k40.py, MC_ANG_DIST). Summed over
#: the 465 pairs of a KM3NeT DOM it gives 656 Hz (a pair 32 deg apart 5.8 Hz, facing away 0.01 Hz).
K40_PAIR_RATE_COEFFICIENTS = (-0.7234, 2.592, -0.4359, 1.105)

#: The longitudinal profile of an EM shower (PDG Review of Particle Physics 2024, "Passage of particles through
#: matter", eq. 34.36): dE/dt = E b (b t)^(a - 1) exp(-b t) / Gamma(a) in radiation lengths t, b ~ 0.5, with the
#: maximum at t_max = (a - 1) / b = ln(E / E_c) + C, C = -0.5 for an electron-initiated shower. Water (PDG atomic and
#: nuclear properties, liquid water): X0 = 36.08 g/cm^2, critical energy E_c = 78.33 MeV for electrons.
EM_PROFILE_B = 0.5
EM_PROFILE_C_ELECTRON = -0.5
RADIATION_LENGTH_WATER_G_PER_CM2 = 36.08
CRITICAL_ENERGY_WATER_GEV = 0.07833
RADIATION_LENGTH_SEA_WATER_M = RADIATION_LENGTH_WATER_G_PER_CM2 / DENSITY_SEA_WATER_G_PER_CM3 / 100.0


#: The muon's mean energy loss -dE/dx = a(E) + b E (MUON_ENERGY_LOSS_MODELS). constant_a: a = 0.27 GeV/m at every
#: energy (the former model; the ionisation loss of a ~23 GeV muon, 31 % above minimum ionisation, so ranges come out
#: 10-14 % short at 1-10 GeV). bethe_bloch: a(E) from the Bethe-Bloch formula with the density effect, as the PDG muon
#: tables compute it (muon_ionisation_loss_gev_per_m); b stays MUON_DEDX_B_PER_M.
MUON_ENERGY_LOSS_MODELS = ("constant_a", "bethe_bloch")
MUON_MASS_GEV = 0.1056583755
ELECTRON_MASS_GEV = 0.51099895e-3
#: Bethe-Bloch in water (PDG Review 2024 "Passage of particles through matter" eq. 34.5; Groom, Mokhov & Striganov
#: 2001 for muons): K = 4 pi N_A r_e^2 m_e c^2 (MeV cm^2/mol); liquid water from the PDG atomic and nuclear properties
#: (muE_water_liquid): Z/A, mean excitation energy I, and Sternheimer's density-effect parameters (a, k, x0, x1, C-bar,
#: delta0). Sea water is taken as water at its density (its salt lowers Z/A by about 0.5 %).
BETHE_K_MEV_CM2_PER_MOL = 0.307075
FINE_STRUCTURE = 1.0 / 137.035999
WATER_Z_OVER_A = 0.55509
WATER_MEAN_EXCITATION_GEV = 79.7e-9
WATER_STERNHEIMER = {"a": 0.09116, "k": 3.4773, "x0": 0.2400, "x1": 2.8004, "c_bar": 3.5017, "delta0": 0.0}
#: What the bethe_bloch model is checked against: the PDG muon table for liquid water (pdg.lbl.gov
#: AtomicNuclearProperties, muE_water_liquid): CSDA range (g/cm^2) at kinetic energy T (GeV); minimum ionisation and
#: the total stopping power at T = 2 GeV (MeV cm^2/g).
PDG_WATER_CSDA_RANGE_G_PER_CM2 = {0.2: 78.94, 0.4: 179.6, 0.8: 377.1, 1.0: 473.2, 1.4: 661.1, 2.0: 935.3}
PDG_WATER_MIN_IONISATION_MEV_CM2_PER_G = 1.992
PDG_WATER_TOTAL_LOSS_AT_2_GEV_MEV_CM2_PER_G = 2.218
#: the range table's kinetic energies (GeV), 0.46 % apart; below its first point (under a millimetre of range) the
#: muon is at rest, above its last (10 PeV, beyond MUPAGE's bundles) there is no range
_RANGE_TABLE_KINETIC_GEV = np.geomspace(1e-3, 1e7, 5001)


def density_effect(beta_gamma: np.ndarray) -> np.ndarray:
    """Sternheimer's density-effect correction delta(beta gamma) for water (WATER_STERNHEIMER)."""
    p = WATER_STERNHEIMER
    x = np.log10(beta_gamma)
    high = 2.0 * np.log(10.0) * x - p["c_bar"]
    middle = high + p["a"] * np.clip(p["x1"] - x, 0.0, None) ** p["k"]
    return np.where(x >= p["x1"], high, np.where(x >= p["x0"], middle, p["delta0"] * 10.0 ** (2.0 * (x - p["x0"]))))


def muon_ionisation_loss_gev_per_m(energy_gev: np.ndarray | float) -> np.ndarray:
    """The muon's electronic energy loss a(E) in sea water (GeV/m) at total energy E: Bethe-Bloch with the density
    effect and the spin-1/2 term, plus bremsstrahlung on atomic electrons (Groom et al. 2001, eq. 6), which PDG's
    muon tables count in a(E). Shell and Barkas corrections (below ~0.1 GeV kinetic) are left out; the formula holds
    above about 1 MeV kinetic (an energy below the muon's mass is taken as the muon at rest)."""
    energy_gev = np.maximum(np.asarray(energy_gev, dtype=np.float64), MUON_MASS_GEV * (1.0 + 1e-9))
    gamma = energy_gev / MUON_MASS_GEV
    beta2 = 1.0 - 1.0 / gamma**2
    bg2 = beta2 * gamma**2
    mass_ratio = ELECTRON_MASS_GEV / MUON_MASS_GEV
    w_max = 2.0 * ELECTRON_MASS_GEV * bg2 / (1.0 + 2.0 * gamma * mass_ratio + mass_ratio**2)
    bracket = (0.5 * np.log(2.0 * ELECTRON_MASS_GEV * bg2 * w_max / WATER_MEAN_EXCITATION_GEV**2) - beta2
               - 0.5 * density_effect(np.sqrt(bg2)) + 0.125 * (w_max / energy_gev) ** 2)
    electronic = BETHE_K_MEV_CM2_PER_MOL * WATER_Z_OVER_A / beta2 * bracket
    log_w = np.log(2.0 * w_max / ELECTRON_MASS_GEV)
    bremsstrahlung = (BETHE_K_MEV_CM2_PER_MOL / (4.0 * np.pi) * WATER_Z_OVER_A * FINE_STRUCTURE
                      * np.maximum(np.log(2.0 * energy_gev / MUON_MASS_GEV) - log_w / 3.0, 0.0)
                      * np.maximum(log_w, 0.0) ** 2)
    # MeV cm^2/g x g/cm^3 = MeV/cm = 0.1 GeV/m
    return (electronic + bremsstrahlung) * DENSITY_SEA_WATER_G_PER_CM3 * 0.1


def check_muon_energy_loss(model: str) -> None:
    """A model name outside MUON_ENERGY_LOSS_MODELS is a one-line ConfigError naming the config key."""
    check_choice("data.events.muon_energy_loss", model, MUON_ENERGY_LOSS_MODELS)


def muon_dedx_gev_per_m(energy_gev: np.ndarray | float, model: str) -> np.ndarray:
    """The muon's mean energy loss a(E) + b E (GeV/m) in sea water under `model` (MUON_ENERGY_LOSS_MODELS)."""
    check_muon_energy_loss(model)
    energy_gev = np.asarray(energy_gev, dtype=np.float64)
    a = MUON_DEDX_A_GEV_PER_M if model == "constant_a" else muon_ionisation_loss_gev_per_m(energy_gev)
    return a + MUON_DEDX_B_PER_M * energy_gev


@functools.cache
def _bethe_bloch_range_table() -> tuple[np.ndarray, np.ndarray]:
    """(total energy, CSDA range) on _RANGE_TABLE_KINETIC_GEV: the range integrated, in log E, by the trapezoid
    rule (the integrand is smooth: a grid ten times finer moves the range by less than 1e-5)."""
    energy = _RANGE_TABLE_KINETIC_GEV + MUON_MASS_GEV
    per_log_kinetic = _RANGE_TABLE_KINETIC_GEV / muon_dedx_gev_per_m(energy, "bethe_bloch")
    steps = 0.5 * (per_log_kinetic[1:] + per_log_kinetic[:-1]) * np.diff(np.log(_RANGE_TABLE_KINETIC_GEV))
    return energy, np.concatenate([[0.0], np.cumsum(steps)])


def muon_range_m(energy_gev: np.ndarray | float, model: str) -> np.ndarray:
    """Continuous-slowing-down range (m) of a muon of total energy E in sea water. constant_a: R = ln(1 + b E / a)
    / b; bethe_bloch: the integral of dE / (a(E) + b E) from rest, from a table."""
    check_muon_energy_loss(model)
    energy_gev = np.asarray(energy_gev, dtype=np.float64)
    if model == "constant_a":
        return np.log1p(MUON_DEDX_B_PER_M * energy_gev / MUON_DEDX_A_GEV_PER_M) / MUON_DEDX_B_PER_M
    table_energy, table_range = _bethe_bloch_range_table()
    if np.any(energy_gev > table_energy[-1]):
        raise ValueError(f"muon energy {float(np.max(energy_gev)):.3g} GeV is beyond the bethe_bloch range table "
                         f"({table_energy[-1]:.3g} GeV)")
    return np.interp(np.log(np.maximum(energy_gev, MUON_MASS_GEV)), np.log(table_energy), table_range, left=0.0)


def muon_energy_at_gev(energy_gev: float, distance_m: np.ndarray, model: str) -> np.ndarray:
    """Muon energy after travelling `distance_m`, 0 once it has stopped. constant_a: E(s) = (E0 + a/b) exp(-b s) -
    a/b; bethe_bloch: the energy whose range is the range left, from the table (total energy, the muon's mass at
    rest)."""
    check_muon_energy_loss(model)
    distance_m = np.asarray(distance_m, dtype=np.float64)
    if model == "constant_a":
        critical = MUON_DEDX_A_GEV_PER_M / MUON_DEDX_B_PER_M
        return np.clip((energy_gev + critical) * np.exp(-MUON_DEDX_B_PER_M * distance_m) - critical, 0.0, None)
    table_energy, table_range = _bethe_bloch_range_table()
    left_m = muon_range_m(energy_gev, model) - distance_m
    energy = np.exp(np.interp(left_m, table_range, np.log(table_energy)))
    return np.where(left_m > 0.0, energy, 0.0)


def muon_photons_per_m(energy_gev: np.ndarray) -> np.ndarray:
    """Photons per metre of a muon of this energy: the bare-muon yield plus the light of its radiative losses
    (b E GeV/m of showers, each 4.7 m of equivalent track per GeV)."""
    return MUON_PHOTONS_PER_M * (1.0 + SHOWER_TRACK_LENGTH_M_PER_GEV * MUON_DEDX_B_PER_M * np.asarray(energy_gev))


def em_shower_profile(energy_gev: float, step_m: float, containment: float = 0.995
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Where along its axis a shower of `energy_gev` deposits its energy (EM_PROFILE_B and the constants above):
    the centres (m from the vertex) of steps of `step_m` out to the `containment` quantile, and the fraction of the
    energy deposited in each (summing to 1). Below E_c exp(0.5) (0.13 GeV) the profile is a falling exponential."""
    shape = 1.0 + EM_PROFILE_B * max(np.log(energy_gev / CRITICAL_ENERGY_WATER_GEV) + EM_PROFILE_C_ELECTRON, 0.0)
    scale_m = RADIATION_LENGTH_SEA_WATER_M / EM_PROFILE_B
    end_m = float(gammaincinv(shape, containment)) * scale_m
    edges_m = np.arange(0.0, end_m + step_m, step_m)
    deposited = np.diff(gammainc(shape, edges_m / scale_m))
    return 0.5 * (edges_m[1:] + edges_m[:-1]), deposited / deposited.sum()


def delta_ray_shower_energy_gev_per_m(energy_gev: np.ndarray | float) -> np.ndarray:
    """Equivalent EM-shower energy (GeV) per metre of muon track in its delta rays (Jpp's fit, module docstring)."""
    energy_gev = np.asarray(energy_gev, dtype=np.float64)
    x = np.log10(np.maximum(energy_gev, DELTA_RAY_MIN_ENERGY_GEV))
    mev_cm2_per_g = np.polynomial.polynomial.polyval(x, DELTA_RAY_COEFFICIENTS)
    # MeV cm^2/g x g/cm^3 = MeV/cm = 0.1 GeV/m; the cubic dips just below 0 right above 0.13 GeV
    return np.where(energy_gev > DELTA_RAY_MIN_ENERGY_GEV,
                    np.maximum(mev_cm2_per_g, 0.0) * DENSITY_SEA_WATER_G_PER_CM3 * 0.1, 0.0)


def track_geometry(pmt_pos_m: np.ndarray, track_pos_m: np.ndarray, track_dir: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each PMT: distance L along the track from `track_pos_m` to the point of closest approach, the
    perpendicular distance rho, and the distance along the track of the Cherenkov emission point."""
    v = np.asarray(pmt_pos_m) - np.asarray(track_pos_m)
    along_m = v @ np.asarray(track_dir)
    rho_m = np.sqrt(np.clip(np.einsum("...i,...i->...", v, v) - along_m**2, 0.0, None))
    emission_m = along_m - rho_m / TAN_CHERENKOV
    return along_m, rho_m, emission_m


def cherenkov_arrival_time_ns(pmt_pos_m: np.ndarray, track_pos_m: np.ndarray, track_dir: np.ndarray,
                              track_time_ns: float | np.ndarray = 0.0) -> np.ndarray:
    """Arrival time of direct Cherenkov light from an infinite track through `track_pos_m` at `track_time_ns`:
    t = t0 + (L - rho / tan theta_c) / c + (rho / sin theta_c) / v_group (km3pipe physics.cherenkov)."""
    along_m, rho_m, _ = track_geometry(pmt_pos_m, track_pos_m, track_dir)
    return (track_time_ns + (along_m - rho_m / TAN_CHERENKOV) / C_LIGHT_M_PER_NS
            + rho_m / SIN_CHERENKOV / V_GROUP_M_PER_NS)


def shower_arrival_time_ns(pmt_pos_m: np.ndarray, vertex_m: np.ndarray, vertex_time_ns: float = 0.0) -> np.ndarray:
    """A shower is a point source at the vertex: light travels at the group velocity."""
    return vertex_time_ns + np.linalg.norm(np.asarray(pmt_pos_m) - vertex_m, axis=-1) / V_GROUP_M_PER_NS


def k40_pair_rate_hz(cos_angle: np.ndarray) -> np.ndarray:
    """Rate of genuine twofold K-40 coincidences of two PMTs of one DOM whose axes make this cosine
    (K40_PAIR_RATE_COEFFICIENTS)."""
    p0, p1, p2, p3 = K40_PAIR_RATE_COEFFICIENTS
    c = np.asarray(cos_angle, dtype=np.float64)
    return np.exp(p0 + c * (p1 + c * (p2 + c * p3)))


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between (arrays of) unit vectors in degrees, clipped against rounding."""
    cos = np.clip(np.sum(np.asarray(a) * np.asarray(b), axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))
