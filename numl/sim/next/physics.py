"""Physics of electrons and photons in high-pressure xenon gas for the NEXT toy Monte Carlo.

Stopping power: electron collision stopping power from the Bethe formula in the form ICRU Report 37
uses for NIST ESTAR (Rohrlich-Carlson F-, mean excitation energy I = 482 eV for xenon; the density
effect is zero for xenon gas below a few MeV, Sternheimer x0 = 1.563), plus a radiative stopping power
from the Bethe-Heitler formula. The shipped table `data/xenon_estar.csv` is computed by `estar_table()`
(`python -m numl.sim.next.physics` rewrites it), not copied from ESTAR: ESTAR itself could not be
downloaded where this code was written. The collision part follows the ESTAR method to well under 1 %;
the radiative part is good to ~20 %, and it is < 10 % of the total at Q_bb.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

ELECTRON_MASS_MEV = 0.51099895
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13
AVOGADRO = 6.02214076e23
FINE_STRUCTURE = 1 / 137.035999
GAS_CONSTANT_J_PER_MOL_K = 8.314462618

XENON_Z = 54
XENON_A_G_PER_MOL = 131.293
XENON_MEAN_EXCITATION_MEV = 482e-6  # ICRU 37 / PDG
#: Second virial coefficient of xenon near 293 K (Dymond & Smith compilation, about -130 cm^3/mol):
#: makes the 15 bar density 8 % higher than the ideal gas.
XENON_B2_CM3_PER_MOL = -130.0

ESTAR_TABLE = "xenon_estar.csv"


def xenon_density_g_cm3(pressure_bar: float, temperature_k: float = 293.0) -> float:
    """Density of xenon gas from the virial equation P V = R T (1 + B2 / V), solved for the molar volume."""
    rt_over_p = GAS_CONSTANT_J_PER_MOL_K * temperature_k / (pressure_bar * 1e5) * 1e6  # cm^3/mol
    # V^2 - (RT/P) V - (RT/P) B2 = 0, the gas root
    molar_volume = 0.5 * (rt_over_p + np.sqrt(rt_over_p**2 + 4 * rt_over_p * XENON_B2_CM3_PER_MOL))
    return XENON_A_G_PER_MOL / molar_volume


def collision_stopping_power(kinetic_mev: np.ndarray, z_over_a: float = XENON_Z / XENON_A_G_PER_MOL,
                             mean_excitation_mev: float = XENON_MEAN_EXCITATION_MEV) -> np.ndarray:
    """Electron mass collision stopping power in MeV cm^2/g (Bethe, ICRU 37, no density effect); xenon by default."""
    tau = np.asarray(kinetic_mev, dtype=np.float64) / ELECTRON_MASS_MEV
    beta2 = tau * (tau + 2) / (tau + 1) ** 2
    f_minus = 1 - beta2 + (tau**2 / 8 - (2 * tau + 1) * np.log(2)) / (tau + 1) ** 2
    ionisation = np.log(tau**2 * (tau + 2) / (2 * (mean_excitation_mev / ELECTRON_MASS_MEV) ** 2))
    prefactor = 2 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 * ELECTRON_MASS_MEV * AVOGADRO * z_over_a
    return prefactor / beta2 * (ionisation + f_minus)


def radiative_stopping_power(kinetic_mev: np.ndarray) -> np.ndarray:
    """Electron mass radiative stopping power of xenon in MeV cm^2/g.

    Bethe-Heitler without screening, Z(Z+1) for electron-electron bremsstrahlung; the radiation
    integral is 4 ln(2E/mc^2) - 4/3 at high energy and 16/3 in the non-relativistic limit.
    """
    total_mev = np.asarray(kinetic_mev, dtype=np.float64) + ELECTRON_MASS_MEV
    phi_rad = np.maximum(16 / 3, 4 * np.log(2 * total_mev / ELECTRON_MASS_MEV) - 4 / 3)
    z_squared_over_a = XENON_Z * (XENON_Z + 1) / XENON_A_G_PER_MOL
    prefactor = FINE_STRUCTURE * CLASSICAL_ELECTRON_RADIUS_CM**2 * AVOGADRO * z_squared_over_a
    return prefactor * total_mev * phi_rad


def estar_table(kinetic_mev: np.ndarray | None = None) -> np.ndarray:
    """Rows of (kinetic energy MeV, collision, radiative, total stopping power MeV cm^2/g) on ESTAR's grid."""
    if kinetic_mev is None:
        mantissas = np.array([1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9])
        kinetic_mev = np.unique(np.concatenate([d * mantissas for d in 10.0 ** np.arange(-3, 1)]))
        kinetic_mev = kinetic_mev[kinetic_mev <= 5.0]
    col = collision_stopping_power(kinetic_mev)
    rad = radiative_stopping_power(kinetic_mev)
    return np.column_stack([kinetic_mev, col, rad, col + rad])


def write_estar_table(path: Path) -> Path:
    header = (
        "Electron stopping power of xenon (Z=54, A=131.293, I=482 eV), the NIST ESTAR quantities.\n"
        "COMPUTED by numl.sim.next.physics.estar_table (Bethe/ICRU 37 collision + Bethe-Heitler radiative),\n"
        "not copied from https://physics.nist.gov/PhysRefData/Star/Text/ESTAR.html (unreachable when written).\n"
        "kinetic_energy_mev,collision_mev_cm2_per_g,radiative_mev_cm2_per_g,total_mev_cm2_per_g"
    )
    np.savetxt(path, estar_table(), delimiter=",", fmt="%.6g", header=header)
    return path


@lru_cache(maxsize=1)
def load_estar_table() -> np.ndarray:
    with resources.files("numl.sim.next").joinpath("data", ESTAR_TABLE).open() as handle:
        return np.loadtxt(handle, delimiter=",", comments="#")


def stopping_power_mev_cm2_g(kinetic_mev: np.ndarray, column: int = 3) -> np.ndarray:
    """Log-log interpolation of the shipped table; column 1 collision, 2 radiative, 3 total."""
    table = load_estar_table()
    log_e = np.log(np.clip(kinetic_mev, table[0, 0], table[-1, 0]))
    return np.exp(np.interp(log_e, np.log(table[:, 0]), np.log(table[:, column])))


def csda_range_mm(kinetic_mev: float, density_g_cm3: float, n_points: int = 4000) -> float:
    """Continuous-slowing-down path length: integral of dE / (rho S(E)) from 1 keV up, in mm."""
    energies = np.linspace(1e-3, kinetic_mev, n_points)
    inverse = 1 / (density_g_cm3 * stopping_power_mev_cm2_g(energies))
    return float(np.trapezoid(inverse, energies) * 10.0)


def highland_sigma_rad(kinetic_mev: np.ndarray, step_mm: np.ndarray, radiation_length_mm: float) -> np.ndarray:
    """Highland (PDG) plane-projected multiple-scattering angle for an electron over one step."""
    total = kinetic_mev + ELECTRON_MASS_MEV
    momentum = np.sqrt(total**2 - ELECTRON_MASS_MEV**2)
    beta = momentum / total
    thickness = step_mm / radiation_length_mm
    return 13.6 / (beta * momentum) * np.sqrt(thickness) * (1 + 0.038 * np.log(thickness))


def highland_theta0_rad(kinetic_mev: np.ndarray, thickness_x0: np.ndarray) -> np.ndarray:
    """Plane-projected multiple-scattering width of an electron (charge 1) after `thickness_x0` = x / X0,
    PDG 2024 eq. 34.15: 13.6 MeV / (beta c p) sqrt(x/X0) [1 + 0.038 ln(x / (X0 beta^2))]; accurate to
    11 % for 1e-3 < x/X0 < 100 (the Gaussian core of Moliere's distribution, Lynch & Dahl 1991)."""
    total = np.asarray(kinetic_mev, dtype=np.float64) + ELECTRON_MASS_MEV
    momentum = np.sqrt(total**2 - ELECTRON_MASS_MEV**2)
    beta = momentum / total
    thickness = np.asarray(thickness_x0, dtype=np.float64)
    return 13.6 / (beta * momentum) * np.sqrt(thickness) * (1 + 0.038 * np.log(thickness / beta**2))


def scattering_variance_per_x0(kinetic_mev: np.ndarray, scale_x0: float) -> np.ndarray:
    """d(theta0^2)/d(x/X0) of a Gaussian random walk of the direction that equals Highland's theta0 at the
    thickness `scale_x0` (its log term evaluated there, PDG 2024 eq. 34.15): theta0^2 / (x/X0) at x/X0 =
    scale_x0. Additive over steps of any length, so the stepping does not change the scattering (Highland
    applied per step is not additive: its log term makes thin steps scatter too little). Over a distance
    t X0 the walk gives Highland's theta0 times (1 + 0.038 ln(scale/beta^2)) / (1 + 0.038 ln(t/beta^2)),
    within Highland's own 11 % for t within about a decade either side of scale_x0."""
    return highland_theta0_rad(kinetic_mev, scale_x0) ** 2 / scale_x0


def hard_photon_rate_per_mm(kinetic_mev: np.ndarray, photon_cut_mev: float, density_g_cm3: float) -> np.ndarray:
    """Bremsstrahlung photons above `photon_cut_mev` per mm of electron path, for a 1/k photon spectrum up to
    the electron's kinetic energy T whose energy integral is the radiative stopping power:
    rho S_rad(T) ln(T / k_cut) / T."""
    kinetic = np.asarray(kinetic_mev, dtype=np.float64)
    hard = kinetic > photon_cut_mev
    rate_per_cm = (density_g_cm3 * stopping_power_mev_cm2_g(kinetic, column=2)
                   * np.log(np.where(hard, kinetic / photon_cut_mev, 1.0)) / np.maximum(kinetic, 1e-12))
    return np.where(hard, rate_per_cm / 10.0, 0.0)


def restricted_stopping_power_mev_cm2_g(kinetic_mev: np.ndarray, photon_cut_mev: float) -> np.ndarray:
    """Collision stopping power plus the part of the radiative one in photons below `photon_cut_mev` (absorbed
    where they are made): a 1/k spectrum up to T puts the fraction min(1, k_cut / T) of it below the cut."""
    kinetic = np.asarray(kinetic_mev, dtype=np.float64)
    soft = np.minimum(1.0, photon_cut_mev / np.maximum(kinetic, 1e-12))
    return stopping_power_mev_cm2_g(kinetic, column=1) + soft * stopping_power_mev_cm2_g(kinetic, column=2)


def electron_density_per_cm3(density_g_cm3: float) -> float:
    """Electrons per cm^3 of xenon: rho N_A Z / A."""
    return density_g_cm3 * AVOGADRO * XENON_Z / XENON_A_G_PER_MOL


def _moller_f_minus(tau: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Berger-Seltzer F-(tau, Delta) of the restricted Moller stopping power (Geant4 Physics Reference Manual,
    G4MollerBhabhaModel, eq. "restricted dE/dx for electrons"): energy transfers below Delta = T_cut / m c^2.
    With ln(2 (tau + 2) / (I / m c^2)^2) in front, at Delta = tau / 2 it is ICRU 37's unrestricted formula
    (collision_stopping_power) to rounding."""
    gamma = tau + 1
    beta2 = tau * (tau + 2) / gamma**2
    return (-1 - beta2 + np.log((tau - delta) * delta) + tau / (tau - delta)
            + (0.5 * delta**2 + (2 * tau + 1) * np.log(1 - delta / tau)) / gamma**2)


def moller_loss_above_cut_mev_cm2_g(kinetic_mev: np.ndarray, cut_mev: float) -> np.ndarray:
    """Mass stopping power carried away by Moller delta rays above `cut_mev` (kinetic): the unrestricted collision
    stopping power minus the restricted one, 2 pi r_e^2 m c^2 N_A Z/A / beta^2 [F-(tau, tau/2) - F-(tau, Delta)]
    (Geant4 PRM, Moller-Bhabha ionisation; Seltzer & Berger 1982). Zero where T <= 2 T_cut (the faster outgoing
    electron is the primary, so a delta has at most T / 2)."""
    tau = np.asarray(kinetic_mev, dtype=np.float64) / ELECTRON_MASS_MEV
    delta_cut = cut_mev / ELECTRON_MASS_MEV
    above = tau > 2 * delta_cut
    t = np.where(above, tau, 1.0)
    d = np.where(above, delta_cut, 0.25)
    beta2 = t * (t + 2) / (t + 1) ** 2
    prefactor = 2 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 * ELECTRON_MASS_MEV * AVOGADRO * XENON_Z / XENON_A_G_PER_MOL
    diff = _moller_f_minus(t, t / 2) - _moller_f_minus(t, d)
    return np.where(above, prefactor / beta2 * diff, 0.0)


def moller_cross_section_cm2(kinetic_mev: np.ndarray, cut_mev: float) -> np.ndarray:
    """Moller cross section per target electron for a delta ray of kinetic energy between `cut_mev` and T / 2
    (Geant4 Physics Reference Manual, G4MollerBhabhaModel, total cross section per atom divided by Z):
    2 pi r_e^2 / (beta^2 (gamma - 1)) [((gamma-1)/gamma)^2 (1/2 - x) + 1/x - 1/(1-x)
    - (2 gamma - 1)/gamma^2 ln((1-x)/x)], x = T_cut / T. Zero where T <= 2 T_cut."""
    kinetic = np.asarray(kinetic_mev, dtype=np.float64)
    above = kinetic > 2 * cut_mev
    t = np.where(above, kinetic, 4 * cut_mev)
    gamma = t / ELECTRON_MASS_MEV + 1
    beta2 = 1 - 1 / gamma**2
    x = cut_mev / t
    bracket = (((gamma - 1) / gamma) ** 2 * (0.5 - x) + 1 / x - 1 / (1 - x)
               - (2 * gamma - 1) / gamma**2 * np.log((1 - x) / x))
    return np.where(above, 2 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 / (beta2 * (gamma - 1)) * bracket, 0.0)


def moller_differential(epsilon: np.ndarray, kinetic_mev: np.ndarray) -> np.ndarray:
    """d sigma / d epsilon (cm^2 per electron), epsilon = T_delta / T in (0, 1/2] (Geant4 PRM, Moller)."""
    gamma = np.asarray(kinetic_mev, dtype=np.float64) / ELECTRON_MASS_MEV + 1
    beta2 = 1 - 1 / gamma**2
    g = (2 * gamma - 1) / gamma**2
    e = np.asarray(epsilon, dtype=np.float64)
    return (2 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 / (beta2 * (gamma - 1))
            * (((gamma - 1) / gamma) ** 2 + 1 / e * (1 / e - g) + 1 / (1 - e) * (1 / (1 - e) - g)))


def sample_moller_fraction(rng: np.random.Generator, kinetic_mev: np.ndarray, cut_mev: float) -> np.ndarray:
    """epsilon = T_delta / T from the Moller cross section on [T_cut / T, 1/2]: proposal 1 / epsilon^2 (inverse
    CDF), accepted with probability epsilon^2 d sigma / d epsilon / bound; epsilon^2 times the bracket is below
    1 + 1/4 + 1 = 2.25 on (0, 1/2] (the negative terms dropped), so the acceptance is at least ~40 %."""
    kinetic = np.asarray(kinetic_mev, dtype=np.float64)
    x = cut_mev / kinetic
    gamma = kinetic / ELECTRON_MASS_MEV + 1
    g = (2 * gamma - 1) / gamma**2
    out = np.empty(kinetic.size)
    todo = np.arange(kinetic.size)
    while todo.size:
        xc = x[todo]
        eps = 1 / (1 / xc - rng.uniform(size=todo.size) * (1 / xc - 2))
        gm = gamma[todo]
        f = (eps**2 * ((gm - 1) / gm) ** 2 + 1 - eps * g[todo]
             + eps**2 / (1 - eps) ** 2 - eps**2 / (1 - eps) * g[todo])
        ok = rng.uniform(size=todo.size) * 2.25 < f
        out[todo[ok]] = eps[ok]
        todo = todo[~ok]
    return out


def bohr_variance_kev2(kinetic_kev: np.ndarray, step_mm: np.ndarray, max_transfer_kev: np.ndarray,
                       density_g_cm3: float) -> np.ndarray:
    """Variance of the energy lost over a step from collisions with energy transfers up to `max_transfer_kev`
    (Bohr; the Gaussian-regime formula of the Geant4 Physics Reference Manual, G4UniversalFluctuation /
    ICRU 49): sigma^2 = 2 pi r_e^2 m c^2 n_el T_c x (1 - beta^2/2) / beta^2."""
    tau = np.asarray(kinetic_kev, dtype=np.float64) / (ELECTRON_MASS_MEV * 1e3)
    beta2 = tau * (tau + 2) / (tau + 1) ** 2
    per_cm = 2 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 * ELECTRON_MASS_MEV * electron_density_per_cm3(density_g_cm3)
    return per_cm * 1e3 * max_transfer_kev * (np.asarray(step_mm) / 10.0) * (1 - beta2 / 2) / beta2


#: Photon mass attenuation coefficient of xenon (cm^2/g) above the K edge (34.56 keV), approximate
#: values recalled from NIST XCOM (not copied: XCOM was unreachable). Checked in tests against the
#: Klein-Nishina Compton term, which dominates from 0.5 MeV up.
PHOTON_ATTENUATION_XENON = np.array([
    (0.040, 22.0), (0.050, 12.3), (0.060, 7.6), (0.080, 3.7), (0.100, 2.0), (0.150, 0.71),
    (0.200, 0.37), (0.300, 0.17), (0.500, 0.094), (1.000, 0.059), (2.000, 0.041), (3.000, 0.035),
])


def photon_attenuation_length_mm(photon_mev: np.ndarray, density_g_cm3: float) -> np.ndarray:
    table = PHOTON_ATTENUATION_XENON
    mu_rho = np.exp(np.interp(np.log(photon_mev), np.log(table[:, 0]), np.log(table[:, 1])))
    return 10.0 / (mu_rho * density_g_cm3)


def klein_nishina_mass_attenuation(photon_mev: float) -> float:
    """Compton mass attenuation of xenon (cm^2/g) from the Klein-Nishina total cross section per electron."""
    k = photon_mev / ELECTRON_MASS_MEV
    sigma = 2 * np.pi * CLASSICAL_ELECTRON_RADIUS_CM**2 * (
        (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - np.log(1 + 2 * k) / k)
        + np.log(1 + 2 * k) / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2
    )
    return float(sigma * AVOGADRO * XENON_Z / XENON_A_G_PER_MOL)


if __name__ == "__main__":
    print(write_estar_table(Path(__file__).with_name("data") / ESTAR_TABLE))
