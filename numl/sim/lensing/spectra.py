"""Convergence power spectra C_ell^kappa from CAMB for a flat LCDM cosmology with massive neutrinos.

Two independent routes:

- ``"source_window"``: CAMB's own lensing source windows (a narrow Gaussian in redshift around each
  source plane) and ``get_source_cls_dict(raw_cl=True)``.
- ``"limber"``: Limber integral over the (non-linear) Weyl-potential power spectrum, as in the CAMB demo
  notebook, with a delta-function source plane.

One CAMB run with non-linear power takes several seconds, so results are cached on disk as ``.npz`` files
keyed by a hash of every input and the CAMB version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from numl.utils.errors import ConfigError, check_positive, check_range

log = logging.getLogger(__name__)

# Bump when the computation below changes, so stale cache files are not reused.
_CACHE_SCHEMA = 1
# Numerical settings of the CAMB runs; part of the cache key.
_SOURCE_WINDOW_SIGMA_Z = 0.01  # width of the Gaussian source window; << z_s approximates a single source plane
_LIMBER_KMAX_MPC = 50.0  # Weyl power is tabulated to this k [1/Mpc]; larger k contributes only at chi < ell/kmax
_LIMBER_N_CHI = 400
_HALOFIT_VERSION = "mead2020"  # HMcode-2020 models the massive-neutrino suppression of the non-linear power


@dataclass(frozen=True)
class Cosmology:
    """Flat LCDM + massive neutrinos.

    ``omega_m`` is the total matter density today including neutrinos; it is held fixed while ``m_nu_ev``
    varies, by lowering the CDM density (the fixed-Omega_m comparison of Golshan & Bayer and of PHYSICS.md).
    The amplitude is fixed by ``A_s`` unless ``sigma8`` is given. ``num_massive_neutrinos`` species share the
    summed mass ``m_nu_ev`` equally (degenerate masses, as in the MassiveNuS and Quijote simulation suites;
    at fixed sum the mass ordering is a sub-leading effect on C_ell^kappa). ``key_prefix`` only names the
    config node in error messages.
    """

    h: float = 0.6766
    omega_b: float = 0.04897
    omega_m: float = 0.3111
    m_nu_ev: float = 0.0
    A_s: float = 2.105e-9
    sigma8: float | None = None
    n_s: float = 0.9665
    nonlinear: bool = True
    num_massive_neutrinos: int = 3
    key_prefix: str = field(default="cosmology", compare=False, repr=False)

    def __post_init__(self) -> None:
        p = self.key_prefix
        check_range(f"{p}.h", self.h, 0.2, 1.5)
        check_range(f"{p}.omega_b", self.omega_b, 1e-4, 0.5)
        check_range(f"{p}.omega_m", self.omega_m, 0.01, 1.0)
        check_range(f"{p}.m_nu_ev", self.m_nu_ev, 0.0, 3.0)
        check_positive(f"{p}.A_s", self.A_s)
        if self.sigma8 is not None:
            check_range(f"{p}.sigma8", self.sigma8, 0.1, 2.0)
        check_range(f"{p}.n_s", self.n_s, 0.5, 1.5)
        if not isinstance(self.nonlinear, bool):
            raise ConfigError(f"{p}.nonlinear={self.nonlinear!r}: must be true or false")
        if self.num_massive_neutrinos not in (1, 2, 3):
            raise ConfigError(f"{p}.num_massive_neutrinos={self.num_massive_neutrinos!r}: must be 1, 2 or 3")
        omega_cdm = self.omega_m - self.omega_b - self.omega_nu
        if omega_cdm <= 0:
            raise ConfigError(
                f"{p}.omega_m={self.omega_m}: must exceed omega_b + omega_nu = {self.omega_b + self.omega_nu:.4f}"
            )

    @property
    def omega_nu(self) -> float:
        """Omega_nu from Omega_nu h^2 = M_nu / 93.14 eV (CAMB's own value differs by 0.1 %)."""
        return self.m_nu_ev / 93.14 / self.h**2

    def physics_dict(self) -> dict:
        d = asdict(self)
        d.pop("key_prefix")
        return d

    def describe(self) -> str:
        amp = f"sigma8={self.sigma8}" if self.sigma8 is not None else f"A_s={self.A_s:.4g}"
        return (
            f"M_nu={self.m_nu_ev} eV, Omega_m={self.omega_m}, Omega_b={self.omega_b}, h={self.h}, {amp}, "
            f"n_s={self.n_s}, nonlinear={self.nonlinear}"
        )


@dataclass(frozen=True)
class ConvergenceSpectra:
    """Auto and cross convergence spectra between source planes.

    ``cl[i, j, ell]`` is the dimensionless C_ell^{kappa_i kappa_j} (steradian) for ``ell = 0 .. ell_max``.
    """

    ell: np.ndarray
    cl: np.ndarray
    source_redshifts: tuple[float, ...]

    def __post_init__(self) -> None:
        n_z = len(self.source_redshifts)
        if self.cl.shape != (n_z, n_z, self.ell.size):
            raise ConfigError(f"cl shape {self.cl.shape}: must be ({n_z}, {n_z}, {self.ell.size})")

    @property
    def ell_max(self) -> int:
        return int(self.ell[-1])

    @property
    def n_z(self) -> int:
        return len(self.source_redshifts)


ROUTES = ("source_window", "limber")


def convergence_power_spectra(
    cosmology: Cosmology,
    source_redshifts: Sequence[float],
    ell_max: int,
    cache_dir: str | Path | None = None,
    route: str = "source_window",
    key_prefix: str = "data",
) -> ConvergenceSpectra:
    """C_ell^kappa for every pair of source planes; reads from / writes to ``cache_dir`` (None: no cache)."""
    if route not in ROUTES:
        raise ConfigError(f"{key_prefix}.route={route!r}: must be one of {', '.join(ROUTES)}")
    zs = tuple(float(z) for z in source_redshifts)
    if not zs:
        raise ConfigError(f"{key_prefix}.source_redshifts=[]: must list at least one source redshift > 0")
    if any(not (0 < z <= 10) for z in zs):
        raise ConfigError(f"{key_prefix}.source_redshifts={list(zs)}: every redshift must be in (0, 10]")
    check_positive(f"{key_prefix}.ell_max", ell_max, integer=True)
    if ell_max < 2:
        raise ConfigError(f"{key_prefix}.ell_max={ell_max}: must be >= 2")

    import camb  # deferred: importing CAMB loads its Fortran library

    key = {
        "schema": _CACHE_SCHEMA,
        "camb": camb.__version__,
        "cosmology": cosmology.physics_dict(),
        "source_redshifts": zs,
        "ell_max": ell_max,
        "route": route,
        "window_sigma_z": _SOURCE_WINDOW_SIGMA_Z,
        "limber_kmax_mpc": _LIMBER_KMAX_MPC,
        "limber_n_chi": _LIMBER_N_CHI,
        "halofit": _HALOFIT_VERSION,
    }

    def compute() -> dict[str, np.ndarray]:
        log.info("CAMB: computing C_ell^kappa (%s route) for %s, z_s=%s ...", route, cosmology.describe(), list(zs))
        params = _camb_params(cosmology, zs, ell_max, route)
        if route == "source_window":
            return {"cl": _source_window_cls(params, cosmology, zs, ell_max)}
        return {"cl": _limber_weyl_cls(params, cosmology, zs, ell_max)}

    arrays = cached_arrays("cl_kappa", key, cache_dir, compute)
    return ConvergenceSpectra(ell=np.arange(ell_max + 1, dtype=np.float64), cl=arrays["cl"], source_redshifts=zs)


def cache_file(prefix: str, key: dict, cache_dir: str | Path | None) -> Path | None:
    """Where `cached_arrays` keeps the arrays of `key` (None without a cache directory)."""
    if cache_dir is None:
        return None
    text = json.dumps(key, sort_keys=True)
    return Path(cache_dir) / f"{prefix}_{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"


def cached_arrays(prefix: str, key: dict, cache_dir: str | Path | None,
                  compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays computed once per `key` (every input and the CAMB version) and kept in `cache_dir` as .npz
    (None: no cache). CAMB runs take seconds to minutes; the cache makes reruns and parallel workers cheap."""
    text = json.dumps(key, sort_keys=True)
    cache_path = cache_file(prefix, key, cache_dir)
    if cache_path is not None and cache_path.is_file():
        with np.load(cache_path) as f:
            return {name: f[name] for name in f.files if name != "key"}
    arrays = compute()
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so parallel workers never read a half-written cache.
        fd, tmp = tempfile.mkstemp(dir=cache_path.parent, suffix=".npz.tmp")
        # mkstemp makes the file private (0600); a cache shared by a group must be readable by it.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=text, **arrays)
        os.replace(tmp, cache_path)
    return arrays


def _run_camb(fn, cosmology: Cosmology):
    import camb

    try:
        return fn()
    except (camb.CAMBError, ValueError, ArithmeticError) as err:
        raise ConfigError(f"CAMB failed for {cosmology.describe()}: {str(err).splitlines()[0]}") from err


def _camb_params(cosmology: Cosmology, zs: tuple[float, ...], ell_max: int, route: str):
    import camb
    from camb import model

    c = cosmology
    h2 = c.h**2
    p = camb.CAMBparams()
    n_massive = c.num_massive_neutrinos if c.m_nu_ev > 0 else 0
    _run_camb(
        lambda: p.set_cosmology(
            H0=100 * c.h, ombh2=c.omega_b * h2, omch2=(c.omega_m - c.omega_b) * h2, mnu=c.m_nu_ev,
            num_massive_neutrinos=n_massive, neutrino_hierarchy="degenerate", omk=0.0,
        ),
        c,
    )
    # Hold total Omega_m fixed: take CAMB's own Omega_nu h^2 out of the CDM.
    p.omch2 = c.omega_m * h2 - p.ombh2 - p.omnuh2
    p.InitPower.set_params(As=c.A_s, ns=c.n_s)
    if c.sigma8 is not None:
        p.InitPower.set_params(As=c.A_s * (c.sigma8 / _sigma8(p, c)) ** 2, ns=c.n_s)
    p.NonLinear = model.NonLinear_both if c.nonlinear else model.NonLinear_none
    p.NonLinearModel.set_params(halofit_version=_HALOFIT_VERSION)
    p.Want_CMB = False  # only lensing sources are needed; skips the CMB line-of-sight work
    p.WantTensors = False
    if route == "source_window":
        from camb.sources import GaussianSourceWindow

        p.set_for_lmax(ell_max, lens_potential_accuracy=0)
        p.SourceWindows = [
            GaussianSourceWindow(redshift=z, source_type="lensing", sigma=_SOURCE_WINDOW_SIGMA_Z) for z in zs
        ]
        p.SourceTerms.limber_windows = True
    return p


def _sigma8(params, cosmology: Cosmology) -> float:
    """Linear sigma8 at z=0 for the amplitude currently set in ``params``."""
    import camb

    p = params.copy()
    p.WantCls = False
    p.set_matter_power(redshifts=[0.0], kmax=2.0)
    return float(_run_camb(lambda: camb.get_results(p), cosmology).get_sigma8_0())


def _source_window_cls(params, cosmology: Cosmology, zs: tuple[float, ...], ell_max: int) -> np.ndarray:
    import camb

    results = _run_camb(lambda: camb.get_results(params), cosmology)
    d = results.get_source_cls_dict(raw_cl=True, lmax=ell_max)
    n_z = len(zs)
    cl = np.zeros((n_z, n_z, ell_max + 1))
    for i in range(n_z):
        for j in range(n_z):
            cl[i, j] = d[f"W{i + 1}xW{j + 1}"][: ell_max + 1]
    return cl


def _limber_weyl_cls(params, cosmology: Cosmology, zs: tuple[float, ...], ell_max: int) -> np.ndarray:
    """C^{ij}(ell) = [ell(ell+1)]^2 int dchi (chi_i - chi)(chi_j - chi) / (chi^4 chi_i chi_j) P_W(k) / k^4."""
    import camb
    from camb import model

    p = params.copy()
    p.WantCls = False
    results = _run_camb(lambda: camb.get_background(p), cosmology)
    chi_s = results.comoving_radial_distance(np.array(zs))
    weyl = _run_camb(
        lambda: camb.get_matter_power_interpolator(
            p, nonlinear=cosmology.nonlinear, hubble_units=False, k_hunit=False, kmax=_LIMBER_KMAX_MPC,
            var1=model.Transfer_Weyl, var2=model.Transfer_Weyl, zmax=max(zs) * 1.05,
        ),
        cosmology,
    )
    ell = np.arange(2, ell_max + 1, dtype=np.float64)
    n_z = len(zs)
    cl = np.zeros((n_z, n_z, ell_max + 1))
    for i in range(n_z):
        for j in range(i, n_z):
            chi_near = min(chi_s[i], chi_s[j])
            # Midpoint rule in chi avoids the chi = 0 end, where the window diverges as k -> infinity.
            edges = np.linspace(0.0, chi_near, _LIMBER_N_CHI + 1)
            chi = 0.5 * (edges[1:] + edges[:-1])
            dchi = np.diff(edges)
            z = results.redshift_at_comoving_radial_distance(chi)
            window = (chi_s[i] - chi) * (chi_s[j] - chi) / (chi**4 * chi_s[i] * chi_s[j])
            k = (ell[:, None] + 0.5) / chi[None, :]
            inside = (k >= 1e-4) & (k <= _LIMBER_KMAX_MPC)
            p_weyl = weyl.P(np.broadcast_to(z, k.shape), np.clip(k, 1e-4, _LIMBER_KMAX_MPC), grid=False)
            integrand = np.where(inside, p_weyl / k**4, 0.0) * window[None, :]
            cl[i, j, 2:] = (ell * (ell + 1)) ** 2 * (integrand @ dchi)
            cl[j, i] = cl[i, j]
    return cl
