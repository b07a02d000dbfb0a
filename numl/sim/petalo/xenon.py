"""Photon interactions in xenon: XCOM cross sections (10 keV to 3 MeV) and Klein-Nishina sampling.

Used by the PETALO liquid-xenon simulator (511 keV) and by the NEXT gas simulator (bremsstrahlung, xenon
X-rays, 208Tl / 214Bi gammas: numl.sim.next.photons). The table `xenon_xcom.csv` (next to this file) holds NIST
XCOM cross sections per atom; between its energies we interpolate log-log, as XCOM itself does, and pair
production log-log in sigma / (1 - E_threshold / E)^3, the threshold behaviour XCOM's own interpolation uses
(Berger & Hubbell, XCOM documentation, NBSIR 87-3597).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

XENON_MOLAR_MASS_G = 131.29
AVOGADRO_PER_MOL = 6.02214076e23
BARN_CM2 = 1e-24
ELECTRON_MASS_KEV = 510.99895
#: pair production thresholds: nuclear field 2 m c^2, electron field (triplet) 4 m c^2
PAIR_NUCLEAR_THRESHOLD_KEV = 2 * ELECTRON_MASS_KEV
PAIR_ELECTRON_THRESHOLD_KEV = 4 * ELECTRON_MASS_KEV
#: mu/rho [cm^2/g] per barn/atom for xenon
BARN_TO_CM2_PER_G = BARN_CM2 * AVOGADRO_PER_MOL / XENON_MOLAR_MASS_G
TABLE_PATH = Path(__file__).with_name("xenon_xcom.csv")


@dataclass(frozen=True)
class CrossSections:
    """Mass attenuation coefficients in cm^2/g at the requested energies."""

    coherent: np.ndarray
    incoherent: np.ndarray
    photoelectric: np.ndarray
    #: pair production in the nuclear and the electron field together (zero below 1.022 MeV)
    pair: np.ndarray

    @property
    def total_without_coherent(self) -> np.ndarray:
        return self.incoherent + self.photoelectric + self.pair

    @property
    def total(self) -> np.ndarray:
        return self.coherent + self.total_without_coherent


@lru_cache(maxsize=1)
def load_table() -> dict[str, np.ndarray]:
    lines = [line for line in TABLE_PATH.read_text().splitlines() if line and not line.startswith("#")]
    names = lines[0].split(",")
    values = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    return {name: values[:, i] for i, name in enumerate(names)}


def cross_sections(energy_kev: np.ndarray | float) -> CrossSections:
    """XCOM mu/rho of xenon in cm^2/g, log-log interpolated; valid from 10 keV to 3 MeV (clamped outside)."""
    table = load_table()
    energy = np.clip(np.asarray(energy_kev, dtype=np.float64), table["energy_kev"][0], table["energy_kev"][-1])
    log_e = np.log(energy)
    log_grid = np.log(table["energy_kev"])

    def interp(column: str) -> np.ndarray:
        return np.exp(np.interp(log_e, log_grid, np.log(table[column]))) * BARN_TO_CM2_PER_G

    def interp_pair(column: str, threshold_kev: float) -> np.ndarray:
        # XCOM's threshold form: log(sigma / (1 - E_th / E)^3) is smooth in log E; zero at and below threshold
        rows = table[column] > 0
        reduced = table[column][rows] / (1 - threshold_kev / table["energy_kev"][rows]) ** 3
        above = energy > threshold_kev
        factor = np.where(above, 1 - threshold_kev / np.where(above, energy, 2 * threshold_kev), 0.0) ** 3
        return np.exp(np.interp(log_e, log_grid[rows], np.log(reduced))) * factor * BARN_TO_CM2_PER_G

    pair = (interp_pair("pair_nuclear_b", PAIR_NUCLEAR_THRESHOLD_KEV)
            + interp_pair("pair_electron_b", PAIR_ELECTRON_THRESHOLD_KEV))
    return CrossSections(interp("coherent_b"), interp("incoherent_b"), interp("photoelectric_b"), pair)


def attenuation_length_mm(energy_kev: float, density_g_cm3: float, include_coherent: bool = False) -> float:
    """Mean free path 1 / (rho mu/rho) in mm. Tracking ignores coherent scattering (see transport.py)."""
    xs = cross_sections(energy_kev)
    mu_rho = xs.total if include_coherent else xs.total_without_coherent
    return float(10.0 / (density_g_cm3 * mu_rho))


def photoelectric_fraction(energy_kev: float, include_coherent: bool = False) -> float:
    """Probability that an interaction is photoelectric absorption."""
    xs = cross_sections(energy_kev)
    total = xs.total if include_coherent else xs.total_without_coherent
    return float(xs.photoelectric / total)


def klein_nishina_cm2_per_electron(energy_kev: np.ndarray | float) -> np.ndarray:
    """Total Klein-Nishina cross section of a free electron (an independent check of XCOM's incoherent)."""
    k = np.asarray(energy_kev, dtype=np.float64) / ELECTRON_MASS_KEV
    r_e_cm = 2.8179403262e-13
    term1 = (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - np.log(1 + 2 * k) / k)
    term2 = np.log(1 + 2 * k) / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2
    return 2 * np.pi * r_e_cm**2 * (term1 + term2)


def sample_compton_energy_fraction(energy_kev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scattered-photon energy fraction eps = E'/E drawn from Klein-Nishina.

    Butcher & Messel's mixture-and-rejection method, as in Geant4's G4KleinNishinaCompton: sample from
    1/eps or eps on [eps0, 1], accept with the remaining factor 1 - eps sin^2 / (1 + eps^2).
    """
    k = np.asarray(energy_kev, dtype=np.float64) / ELECTRON_MASS_KEV
    eps0 = 1.0 / (1.0 + 2.0 * k)
    alpha1 = -np.log(eps0)
    alpha2 = 0.5 * (1.0 - eps0**2)
    eps = np.empty_like(k)
    todo = np.arange(len(k))
    while todo.size:
        r1, r2, r3 = rng.random((3, todo.size))
        use_log = r1 < alpha1[todo] / (alpha1[todo] + alpha2[todo])
        e0 = eps0[todo]
        trial = np.where(use_log, np.exp(-alpha1[todo] * r2), np.sqrt(e0**2 + (1 - e0**2) * r2))
        one_minus_cos = (1 - trial) / (trial * k[todo])
        sin2 = one_minus_cos * (2 - one_minus_cos)
        accept = r3 <= 1 - trial * sin2 / (1 + trial**2)
        eps[todo[accept]] = trial[accept]
        todo = todo[~accept]
    return eps
