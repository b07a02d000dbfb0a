"""Weak-lensing convergence maps for massive vs massless neutrino cosmologies.

``convergence_power_spectra`` runs CAMB (cached on disk), ``ConvergenceMapSimulator`` turns the spectra into
Gaussian or lognormal tomographic maps with shape noise, ``measure_power_spectrum`` is the binned estimator.
``numl.sim.lensing.nbody`` simulates the non-Gaussian alternative: particle-mesh N-body runs with massive
neutrinos, ray traced into convergence maps.
"""

from numl.sim.lensing.maps import (
    FIELDS,
    ConvergenceMapSimulator,
    binned_power_spectra,
    fourier_ell,
    lognormal_shift_hilbert2011,
    measure_power_spectrum,
    required_ell_max,
)
from numl.sim.lensing.spectra import ROUTES, ConvergenceSpectra, Cosmology, convergence_power_spectra

__all__ = [
    "FIELDS",
    "ROUTES",
    "ConvergenceMapSimulator",
    "ConvergenceSpectra",
    "Cosmology",
    "binned_power_spectra",
    "convergence_power_spectra",
    "fourier_ell",
    "lognormal_shift_hilbert2011",
    "measure_power_spectrum",
    "required_ell_max",
]
