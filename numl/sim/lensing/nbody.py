"""Particle-mesh N-body simulation of cold matter with massive neutrinos, and ray tracing of its light cone (Born
or multi-plane).

Why numl has its own PM code: of the maintained PM packages, jaxpm installs here but has no massive neutrinos
(and needs JAX), FastPM's Python package does not build, and pmwd is not on the package index. This is a
compact torch PM (CPU and CUDA alike) following FastPM's scheme (Feng et al. 2016, arXiv:1603.00476):

- Initial conditions from CAMB: the linear cold-matter (CDM + baryon) spectrum at ``z_init``, Gaussian phases
  from a seed (the same seed gives the same phases in every cosmology: matched pairs), displacements and
  momenta to second order (2LPT).
- Kick-drift-kick steps uniform in a, with FastPM's modified factors built from the linear growth D(a), so the
  large scales grow exactly as linear theory however few the steps.
- CIC painting and force readout (both CIC windows deconvolved in the Poisson solve), mesh = B x particles.
- Background expansion E(a), distances and growth taken from CAMB, so radiation and massive neutrinos are in
  the expansion history.
- Neutrinos as a linear response of the cold matter: delta_nu(k, a) = [T_nu / T_cb](k, a) delta_cb(k, a) with
  the transfer functions of CAMB (the response form of Ali-Haimoud & Bird 2013, arXiv:1209.0461, in its
  transfer-ratio approximation), so the potential is sourced by f_cb delta_cb + f_nu delta_nu.

Born ray tracing (as LensTools, Petri 2016, does for MassiveNuS): the light cone is cut into lens planes of
thickness box / slabs_per_box; each plane is the projected total-matter density of the snapshot at the plane's
distance, for each of the three axes and each slab; a map takes for every plane a random axis, slab, shift,
flip and transposition and sums kappa = sum_i w_i(chi_s) Sigma_i(chi_i theta), with w_i the lensing kernel
(3/2) Omega_m (H0/c)^2 chi (chi_s - chi) / (chi_s a) averaged over the plane. Multi-plane ray tracing
(`multi_plane_convergence`, `ray_tracing: multi_plane`) deflects the rays at every plane of the same light cone
and follows the distortion matrix, adding the post-Born terms.

Units: comoving Mpc/h, wavenumbers h/Mpc, time variable a, H0 = 1.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.interpolate import CubicSpline

from numl.sim.blocks import spawned_pool
from numl.sim.lensing.spectra import Cosmology, _camb_params, _run_camb, cache_file, cached_arrays
from numl.utils.errors import ConfigError, check_choice, check_keys, check_positive, check_range
from numl.utils.progress import track
from numl.utils.seeds import derived_seed

log = logging.getLogger(__name__)

HUBBLE_DISTANCE_MPC_H = 299792.458 / 100.0  # c / H0 in Mpc/h
# Bump when the tables below change, so stale cache files are not reused.
_TABLES_SCHEMA = 2
# The cold-matter growth D(a) is read from CAMB at this wavenumber: far above the horizon scale at z_init and
# below the neutrino free-streaming scale, where cold matter and neutrinos grow together (linear theory).
_GROWTH_K_H_MPC = 0.01
_N_TRANSFER_REDSHIFTS = 64


@dataclass(frozen=True)
class ParticleMeshSetup:
    """Size and time stepping of one simulation.

    box_mpc_h: side of the periodic box; n_particles: particles per side; n_mesh: force mesh per side (1 or 2
    times n_particles, FastPM uses 2x); n_steps: KDK steps from z_init to 0; slabs_per_box: lens planes
    per box length (plane thickness box / slabs_per_box).
    """

    box_mpc_h: float = 256.0
    n_particles: int = 64
    n_mesh: int = 128
    n_steps: int = 20
    z_init: float = 19.0
    slabs_per_box: int = 2
    key_prefix: str = "data.nbody"

    # Fewer steps than this leave the nonlinear scales far from converged even with FastPM's factors (Feng et
    # al. 2016 show 10 steps reproduce P(k) to a few % at k < 1 h/Mpc, 5 steps do not).
    MIN_STEPS = 10

    def __post_init__(self) -> None:
        p = self.key_prefix
        check_positive(f"{p}.box_mpc_h", self.box_mpc_h)
        check_positive(f"{p}.n_particles", self.n_particles, integer=True)
        check_positive(f"{p}.n_mesh", self.n_mesh, integer=True)
        check_positive(f"{p}.n_steps", self.n_steps, integer=True)
        check_range(f"{p}.z_init", self.z_init, 5.0, 200.0)
        check_positive(f"{p}.slabs_per_box", self.slabs_per_box, integer=True)
        if self.n_particles < 8:
            raise ConfigError(f"{p}.n_particles={self.n_particles}: must be >= 8 per side")
        if self.n_mesh not in (self.n_particles, 2 * self.n_particles):
            raise ConfigError(f"{p}.n_mesh={self.n_mesh}: must be 1 or 2 times {p}.n_particles={self.n_particles}"
                              f" (on other meshes the particle lattice paints as spurious density modes)")
        if self.n_mesh % (2 * self.slabs_per_box):
            raise ConfigError(f"{p}.slabs_per_box={self.slabs_per_box}: {p}.n_mesh={self.n_mesh} must split into "
                              f"that many slabs of an even number of cells")
        if self.n_steps < self.MIN_STEPS:
            raise ConfigError(f"{p}.n_steps={self.n_steps}: too few; use >= {self.MIN_STEPS} kick-drift-kick steps "
                              f"(fewer leave the nonlinear power far from converged)")

    @property
    def plane_thickness_mpc_h(self) -> float:
        return self.box_mpc_h / self.slabs_per_box

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("key_prefix")
        return d


# ----- linear theory from CAMB ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearTables:
    """What the PM takes from CAMB for one cosmology (h units).

    a: scale factors (ascending) of e_of_a, growth, chi; response_a: those of the response table rows.
    """

    omega_m: float  # total matter today, neutrinos included
    f_nu: float  # Omega_nu / Omega_m
    a: np.ndarray
    e_of_a: np.ndarray  # H(a) / H0
    growth: np.ndarray  # linear cold-matter growth at _GROWTH_K_H_MPC, D(1) = 1
    chi: np.ndarray  # comoving distance [Mpc/h]
    k: np.ndarray  # [h/Mpc]
    response_a: np.ndarray
    response: np.ndarray  # [len(response_a), len(k)]: delta_nu / delta_cb
    p_cb_init: np.ndarray  # linear cold-matter P(k) at z_init [(Mpc/h)^3]

    def interpolated_response(self, a: float) -> np.ndarray:
        """delta_nu / delta_cb at scale factor a on the k table (linear in a between rows)."""
        i = int(np.clip(np.searchsorted(self.response_a, a) - 1, 0, len(self.response_a) - 2))
        t = float(np.clip((a - self.response_a[i]) / (self.response_a[i + 1] - self.response_a[i]), 0.0, 1.0))
        return (1 - t) * self.response[i] + t * self.response[i + 1]

    def a_of_chi(self, chi: np.ndarray) -> np.ndarray:
        return np.interp(chi, self.chi[::-1], self.a[::-1])

    def chi_of_z(self, z: float) -> float:
        return float(np.interp(1.0 / (1.0 + z), self.a, self.chi))


def linear_tables(cosmology: Cosmology, z_init: float, k_max_h_mpc: float,
                  cache_dir: str | Path | None = None) -> LinearTables:
    """Background, growth, neutrino response and initial spectrum from one linear CAMB run (cached)."""
    import camb

    key = {"schema": _TABLES_SCHEMA, "camb": camb.__version__, "cosmology": cosmology.physics_dict(),
           "z_init": float(z_init), "k_max": float(k_max_h_mpc), "growth_k": _GROWTH_K_H_MPC,
           "n_z": _N_TRANSFER_REDSHIFTS}

    def compute() -> dict[str, np.ndarray]:
        log.info("CAMB: linear transfer functions for the N-body initial conditions (%s)", cosmology.describe())
        params = _camb_params(cosmology, (1.0,), 100, "limber")
        params.NonLinear = camb.model.NonLinear_none
        params.WantCls = False
        # Rows to a little beyond z_init, so the growth spline has no end effects at the start; z_init itself is
        # one of them (the initial spectrum).
        z_grid = np.expm1(np.linspace(0.0, np.log1p(z_init * 1.1), _N_TRANSFER_REDSHIFTS - 1))
        z_transfer = np.sort(np.append(z_grid, z_init))[::-1]
        params.set_matter_power(redshifts=list(z_transfer), kmax=k_max_h_mpc * cosmology.h, nonlinear=False,
                                silent=True)
        results = _run_camb(lambda: camb.get_results(params), cosmology)
        transfer = results.get_matter_transfer_data()
        z_rows = np.asarray(results.transfer_redshifts)
        k = transfer.transfer_z("k/h", 0)
        t_cb = np.stack([transfer.transfer_z("delta_nonu", i) for i in range(len(z_rows))])
        t_nu = np.stack([transfer.transfer_z("delta_nu", i) for i in range(len(z_rows))])
        order = np.argsort(-z_rows)  # ascending a
        z_rows, t_cb, t_nu = z_rows[order], t_cb[order], t_nu[order]
        growth_row = np.array([np.interp(np.log(_GROWTH_K_H_MPC), np.log(k), row) for row in t_cb])
        kh, z_pk, pk = results.get_linear_matter_power_spectrum(var1="delta_nonu", var2="delta_nonu",
                                                                hubble_units=True, k_hunit=True)
        init_row = int(np.argmin(np.abs(np.asarray(z_pk) - z_init)))
        p_cb_init = np.exp(np.interp(np.log(k), np.log(kh), np.log(pk[init_row])))
        a_fine = np.geomspace(1.0 / (1.0 + z_init * 1.1), 1.0, 512)
        z_fine = 1.0 / a_fine - 1.0
        h = cosmology.h
        omega_m = (params.omch2 + params.ombh2 + params.omnuh2) / h**2
        return {
            "omega_m": np.array(omega_m), "f_nu": np.array(params.omnuh2 / h**2 / omega_m),
            "a": a_fine, "e_of_a": results.hubble_parameter(z_fine) / (100.0 * h),
            "growth": CubicSpline(-np.log1p(z_rows), growth_row / growth_row[-1])(np.log(a_fine)),
            "chi": results.comoving_radial_distance(z_fine) * h, "k": k,
            "response_a": 1.0 / (1.0 + z_rows), "response": t_nu / t_cb if params.omnuh2 > 0 else 0 * t_cb,
            "p_cb_init": p_cb_init,
        }

    arrays = cached_arrays("nbody_tables", key, cache_dir, compute)
    return LinearTables(**{name: (float(v) if v.ndim == 0 else v) for name, v in arrays.items()})


def camb_matter_power_z0(cosmology: Cosmology, k_h_mpc: np.ndarray, cache_dir: str | Path | None = None
                         ) -> dict[str, np.ndarray]:
    """CAMB's P(k) at z = 0: total matter linear ("linear") and non-linear (HMcode-2020, "nonlinear"), cold
    matter linear ("linear_cb"): the N-body's references."""
    import camb

    key = {"schema": _TABLES_SCHEMA, "camb": camb.__version__, "cosmology": cosmology.physics_dict(),
           "k": [float(k) for k in k_h_mpc]}

    def compute() -> dict[str, np.ndarray]:
        params = _camb_params(cosmology, (1.0,), 100, "limber")
        params.WantCls = False
        params.set_matter_power(redshifts=[0.0], kmax=float(max(k_h_mpc)) * 1.5 * cosmology.h, nonlinear=True,
                                silent=True)
        results = _run_camb(lambda: camb.get_results(params), cosmology)
        out = {}
        for name, nonlinear, var in (("linear", False, "delta_tot"), ("nonlinear", True, "delta_tot"),
                                     ("linear_cb", False, "delta_nonu")):
            interp = results.get_matter_power_interpolator(nonlinear=nonlinear, hubble_units=True, k_hunit=True,
                                                           var1=var, var2=var)
            out[name] = interp.P(0.0, np.asarray(k_h_mpc))
        return out

    return cached_arrays("nbody_camb_pk", key, cache_dir, compute)


# ----- particle-mesh operations ----------------------------------------------------------------------------
def _cic_corners(positions: torch.Tensor, n_mesh: int, cell: float):
    """Flat mesh indices and weights of the 8 cells around each position: ([8, N] int64, [8, N] float)."""
    g = positions / cell
    base = torch.floor(g)
    frac = g - base
    base = base.long()
    indices, weights = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                offset = torch.tensor([dx, dy, dz], device=positions.device)
                cell_index = torch.remainder(base + offset, n_mesh)
                w = ((frac if dx else 1 - frac)[:, 0] * (frac if dy else 1 - frac)[:, 1]
                     * (frac if dz else 1 - frac)[:, 2])
                indices.append((cell_index[:, 0] * n_mesh + cell_index[:, 1]) * n_mesh + cell_index[:, 2])
                weights.append(w)
    return torch.stack(indices), torch.stack(weights)


def cic_overdensity(positions: torch.Tensor, n_mesh: int, box: float) -> torch.Tensor:
    """delta = n / n_mean - 1 on an [n_mesh]^3 mesh, cloud-in-cell."""
    return _paint(*_cic_corners(positions, n_mesh, box / n_mesh), n_mesh)


def _paint(index: torch.Tensor, weight: torch.Tensor, n_mesh: int) -> torch.Tensor:
    """The overdensity of particles with CIC corners (index, weight) [8, N] on an [n_mesh]^3 mesh."""
    counts = torch.zeros(n_mesh**3, dtype=weight.dtype, device=weight.device)
    counts.index_add_(0, index.reshape(-1), weight.reshape(-1))
    return (counts * (n_mesh**3 / index.shape[1]) - 1.0).reshape(n_mesh, n_mesh, n_mesh)


class FourierMesh:
    """Wave vectors of an rfftn mesh [h/Mpc] and the CIC window, for one (n_mesh, box, device)."""

    def __init__(self, n_mesh: int, box: float, device: torch.device | str = "cpu") -> None:
        self.n_mesh, self.box = n_mesh, box
        k_full = torch.fft.fftfreq(n_mesh, d=box / n_mesh, device=device) * 2 * math.pi
        k_half = torch.fft.rfftfreq(n_mesh, d=box / n_mesh, device=device) * 2 * math.pi
        self.kx, self.ky, self.kz = k_full[:, None, None], k_full[None, :, None], k_half[None, None, :]
        self.k2 = self.kx**2 + self.ky**2 + self.kz**2
        self.k = torch.sqrt(self.k2)
        cell = box / n_mesh

        def sinc(k):  # sin(k cell / 2) / (k cell / 2), the Fourier transform of one cell
            return torch.special.sinc(k * cell / (2 * math.pi))

        self.cic_window = (sinc(self.kx) * sinc(self.ky) * sinc(self.kz)) ** 2
        # The gradient as FastPM takes it, a 4-point finite difference: it goes to zero at the mesh Nyquist
        # frequency, where an exact i k would turn the particles' aliased small-scale density into spurious
        # large-scale forces (measured: 3.6 % too strong linear force with i k, 0.4 % too weak with this).
        self.finite_difference_k = tuple((8 * torch.sin(k * cell) - torch.sin(2 * k * cell)) / (6 * cell)
                                         for k in (self.kx, self.ky, self.kz))

    def on_mesh(self, k_table: np.ndarray, values: np.ndarray) -> torch.Tensor:
        """A function of |k| tabulated on `k_table` (log-linear interpolation, clamped), on this mesh."""
        log_k = np.log(np.maximum(self.k.double().cpu().numpy().ravel(), k_table[0]))
        out = np.interp(log_k, np.log(k_table), values)
        return torch.from_numpy(out).to(self.k.device, torch.float32).reshape(self.k.shape)


class ParticleMeshSimulation:
    """One N-body realisation: cold-matter particles from 2LPT at z_init, evolved to z = 0 by KDK steps."""

    def __init__(self, tables: LinearTables, setup: ParticleMeshSetup, seed: int,
                 device: torch.device | str = "cpu") -> None:
        self.tables, self.setup, self.device = tables, setup, torch.device(device)
        self.mesh = FourierMesh(setup.n_mesh, setup.box_mpc_h, device)
        # FastPM's factors for p = a^2 dx/dt: the linear solution x = q + D s has momentum G_p s with
        # G_p = a^3 E dD/da and force dp/dt = G_f s with G_f = a E dG_p/da. They are exact for the D that obeys
        # this simulation's large-scale dynamics, the growth equation with all matter clustering:
        # dG_p/dln a = 3/2 Omega_m D / (a E). CAMB's D at any finite k is not that solution with massive neutrinos
        # (they cluster only partly there: 0.8 % less growth since z = 19 at 0.1 eV), and factors built from it
        # bias every kick by as much, however many steps; so D is integrated here from CAMB's D and dD/da at the
        # start, where the neutrinos' clustering has not yet mattered.
        log_a = np.log(tables.a)
        e_of_a = CubicSpline(log_a, tables.e_of_a)
        camb_growth = CubicSpline(log_a, tables.growth)
        omega_m = tables.omega_m

        def growth_equation(ln_a, y):
            a = math.exp(ln_a)
            return [y[1] / (a**2 * e_of_a(ln_a)), 1.5 * omega_m * y[0] / (a * e_of_a(ln_a))]

        a0 = tables.a[0]
        start = [float(camb_growth(log_a[0])), float(a0**2 * tables.e_of_a[0] * camb_growth(log_a[0], 1))]
        solution = solve_ivp(growth_equation, (log_a[0], log_a[-1]), start, t_eval=log_a, rtol=1e-9, atol=1e-12)
        self._growth = CubicSpline(log_a, solution.y[0])
        self._g_p = CubicSpline(log_a, solution.y[1])
        self.seed = int(seed)

    def growth(self, a: float) -> float:
        return float(self._growth(np.log(a)))

    def g_p(self, a: float) -> float:
        return float(self._g_p(np.log(a)))

    def g_f(self, a: float) -> float:
        return 1.5 * self.tables.omega_m * self.growth(a) / a  # = a E dG_p/da by the growth equation

    # -- initial conditions --
    def linear_overdensity_k(self) -> torch.Tensor:
        """rfftn of the linear cold-matter overdensity at z_init on the particle grid (seeded white noise)."""
        n, box = self.setup.n_particles, self.setup.box_mpc_h
        generator = torch.Generator().manual_seed(self.seed)
        white = torch.randn((n, n, n), generator=generator, dtype=torch.float64)
        grid = FourierMesh(n, box, "cpu")
        power = grid.on_mesh(self.tables.k, np.log(self.tables.p_cb_init)).double().exp()
        # E|rfftn(white)|^2 = n^3; the overdensity's modes need P(k) n^6 / V.
        delta_k = torch.fft.rfftn(white) * torch.sqrt(power * n**3 / box**3)
        delta_k[0, 0, 0] = 0
        return delta_k

    def initial_conditions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions and momenta p = a^2 dx/dt (H0 = 1) at z_init from second-order LPT."""
        n, box = self.setup.n_particles, self.setup.box_mpc_h
        delta_k = self.linear_overdensity_k()
        grid = FourierMesh(n, box, "cpu")
        k_vec = (grid.kx.double(), grid.ky.double(), grid.kz.double())
        inv_k2 = torch.where(grid.k2 > 0, 1.0 / grid.k2.double(), torch.zeros((), dtype=torch.float64))
        # First order: s1 = -grad phi1, laplacian phi1 = delta  =>  s1_k = i k delta_k / k^2.
        s1 = [torch.fft.irfftn(1j * k * delta_k * inv_k2, s=(n, n, n)) for k in k_vec]
        # Second order: laplacian phi2 = sum_{i<j} (phi1_ii phi1_jj - phi1_ij^2), s2 = grad phi2, D2 = -3/7 D1^2.
        phi_ij = {(i, j): torch.fft.irfftn(k_vec[i] * k_vec[j] * delta_k * inv_k2, s=(n, n, n))
                  for i in range(3) for j in range(i, 3)}
        source = (phi_ij[0, 0] * phi_ij[1, 1] + phi_ij[0, 0] * phi_ij[2, 2] + phi_ij[1, 1] * phi_ij[2, 2]
                  - phi_ij[0, 1] ** 2 - phi_ij[0, 2] ** 2 - phi_ij[1, 2] ** 2)
        phi2_k = -torch.fft.rfftn(source) * inv_k2
        s2 = [torch.fft.irfftn(1j * k * phi2_k, s=(n, n, n)) for k in k_vec]
        # The lattice sits half a mesh cell off the mesh nodes: CIC then paints the unperturbed lattice as a
        # uniform density for a mesh of 1x or 2x the particles. On the nodes, a 2x mesh would see the lattice as
        # modes at the mesh Nyquist frequency whose readout, once particles move, is a spurious force.
        lattice = (torch.arange(n, dtype=torch.float64) + 0.5 * n / self.setup.n_mesh) * (box / n)
        q = torch.stack(torch.meshgrid(lattice, lattice, lattice, indexing="ij"), -1)
        disp1 = torch.stack(s1, -1).reshape(-1, 3)
        disp2 = torch.stack(s2, -1).reshape(-1, 3)
        a0 = 1.0 / (1.0 + self.setup.z_init)
        # The field is the linear one at a0 (D1(a0) = 1 in these units); dD1/dD = 1 / D(a0), dD2 = -6/7 D1 dD1.
        momentum_per_d = self.g_p(a0) / self.growth(a0)
        positions = torch.remainder(q.reshape(-1, 3) + disp1 - 3.0 / 7.0 * disp2, box)
        momenta = momentum_per_d * (disp1 - 6.0 / 7.0 * disp2)
        return positions.float().to(self.device), momenta.float().to(self.device)

    # -- forces --
    def total_matter_k(self, delta_cb_k: torch.Tensor, a: float) -> torch.Tensor:
        """Total-matter modes from the cold-matter modes: f_cb delta_cb + f_nu R(k, a) delta_cb."""
        if self.tables.f_nu == 0:
            return delta_cb_k
        response = self.mesh.on_mesh(self.tables.k, self.tables.interpolated_response(a))
        return delta_cb_k * ((1 - self.tables.f_nu) + self.tables.f_nu * response)

    def accelerations(self, positions: torch.Tensor, a: float) -> torch.Tensor:
        """-grad phi at the particles, laplacian phi = (3/2) Omega_m delta_m / a (comoving, H0 = 1)."""
        mesh = self.mesh
        # The corners are kept: the readout below uses the same ones.
        index, weight = _cic_corners(positions, mesh.n_mesh, mesh.box / mesh.n_mesh)
        delta = _paint(index, weight, mesh.n_mesh)
        delta_k = self.total_matter_k(torch.fft.rfftn(delta), a)
        # The CIC painting window is deconvolved once: with the 4-point gradient this keeps the linear growth
        # of the particle lattice within 1 % of CAMB's to half the particle Nyquist wavenumber (none: 6 % low
        # there; twice, for painting and readout: 15-40 % high, the readout window being half cancelled by the
        # finite-difference gradient).
        kernel = torch.where(mesh.k2 > 0, 1.5 * self.tables.omega_m / a / (mesh.k2 * mesh.cic_window),
                             torch.zeros((), device=mesh.k2.device))
        minus_potential_k = delta_k * kernel  # -phi_k, so the force -grad phi has modes i k (-phi_k)
        accel = torch.empty_like(positions)
        for axis, k in enumerate(mesh.finite_difference_k):
            force = torch.fft.irfftn(1j * k * minus_potential_k, s=(mesh.n_mesh,) * 3).reshape(-1)
            accel[:, axis] = (force[index] * weight).sum(0)
        return accel

    # -- evolution --
    def run(self, output_a: list[float] = (), on_output=None, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Evolve to a = 1; at each a in `output_a` (ascending) call on_output(a, positions) with the particles
        drifted to exactly that time. Returns the final positions and momenta."""
        setup, box = self.setup, self.setup.box_mpc_h
        a_steps = np.linspace(1.0 / (1.0 + setup.z_init), 1.0, setup.n_steps + 1)
        outputs = sorted(float(a) for a in output_a)
        if outputs and not a_steps[0] < outputs[0]:
            raise ConfigError(f"data.nbody.z_init={setup.z_init}: the light cone needs a snapshot at "
                              f"z = {1 / outputs[0] - 1:.3g}, before the simulation starts; raise z_init")
        x, p = self.initial_conditions()
        force = self.accelerations(x, a_steps[0])
        for step in range(setup.n_steps):
            a0, a1 = float(a_steps[step]), float(a_steps[step + 1])
            ah = 0.5 * (a0 + a1)
            p = p + force * ((self.g_p(ah) - self.g_p(a0)) / self.g_f(a0))
            drift_per_d = 1.0 / self.g_p(ah)
            while outputs and outputs[0] <= a1 + 1e-12:
                a_out = outputs.pop(0)
                x_out = torch.remainder(x + p * ((self.growth(a_out) - self.growth(a0)) * drift_per_d), box)
                on_output(a_out, x_out)
            x = torch.remainder(x + p * ((self.growth(a1) - self.growth(a0)) * drift_per_d), box)
            force = self.accelerations(x, a1)
            p = p + force * ((self.g_p(a1) - self.g_p(ah)) / self.g_f(a1))
            if progress is not None:
                progress(step + 1, setup.n_steps)
        return x, p

    def total_matter_overdensity(self, positions: torch.Tensor, a: float) -> torch.Tensor:
        """delta_m on the mesh for the lens planes: the painted cold matter, its CIC window deconvolved (it
        would otherwise take a further 20 % of the convergence power at ell ~ 1000), plus the linear-response
        neutrinos."""
        delta = cic_overdensity(positions, self.mesh.n_mesh, self.mesh.box)
        delta_k = self.total_matter_k(torch.fft.rfftn(delta), a) / self.mesh.cic_window
        return torch.fft.irfftn(delta_k, s=delta.shape)


def matter_power_spectrum(positions: torch.Tensor, simulation: ParticleMeshSimulation, a: float = 1.0,
                          n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Total-matter P(k) of the particles [(Mpc/h)^3]: CIC deconvolved, cold-matter shot noise subtracted.

    Returns (k centres, P, modes per bin), bins one fundamental mode wide up to the particle Nyquist wavenumber.
    """
    mesh = simulation.mesh
    delta_k = simulation.total_matter_k(torch.fft.rfftn(cic_overdensity(positions, mesh.n_mesh, mesh.box)), a)
    box, n = mesh.box, mesh.n_mesh
    power = (delta_k.abs() ** 2 / mesh.cic_window**2) * (box**3 / n**6)
    # rfftn holds half the modes: weight the kz = 0 and Nyquist planes once, the others twice.
    multiplicity = torch.full_like(mesh.k, 2.0)
    multiplicity[..., 0] = 1.0
    if n % 2 == 0:
        multiplicity[..., -1] = 1.0
    k_fundamental = 2 * math.pi / box
    k_nyquist_particles = math.pi * simulation.setup.n_particles / box
    n_bins = n_bins or int(k_nyquist_particles / k_fundamental)
    edges = k_fundamental * (np.arange(n_bins + 1) + 0.5)
    which = torch.bucketize(mesh.k.reshape(-1), torch.as_tensor(edges, dtype=mesh.k.dtype, device=mesh.k.device))
    flat = lambda t: t.reshape(-1).double()  # noqa: E731
    counts = torch.bincount(which, weights=flat(multiplicity), minlength=n_bins + 2)[1:n_bins + 1]
    k_sum = torch.bincount(which, weights=flat(multiplicity * mesh.k), minlength=n_bins + 2)[1:n_bins + 1]
    p_sum = torch.bincount(which, weights=flat(multiplicity * power), minlength=n_bins + 2)[1:n_bins + 1]
    shot_noise = (1 - simulation.tables.f_nu) ** 2 * box**3 / len(positions)
    keep = counts > 0
    return ((k_sum / counts)[keep].cpu().numpy(), (p_sum / counts)[keep].cpu().numpy() - shot_noise,
            counts[keep].cpu().numpy())


# ----- light cone and Born ray tracing -----------------------------------------------------------------------
@dataclass(frozen=True)
class LensPlanes:
    """The light cone of one simulation as lens planes.

    surface_density[i, axis, slab] is the integral of delta_m along `axis` over `slab` of the snapshot at the
    distance of plane i [Mpc/h], on the [n_mesh, n_mesh] grid of the two other axes.
    """

    chi_edges: np.ndarray  # [n_planes + 1] comoving distances bounding the planes [Mpc/h]
    a_centre: np.ndarray  # [n_planes] scale factor of each plane's snapshot
    surface_density: torch.Tensor  # [n_planes, 3, slabs_per_box, n_mesh, n_mesh] float32
    box: float


def light_cone_planes(tables: LinearTables, setup: ParticleMeshSetup, chi_max: float, seed: int,
                      device: torch.device | str = "cpu", progress=None) -> LensPlanes:
    """Run one simulation and cut its light cone from the observer to `chi_max` into lens planes."""
    thickness = setup.plane_thickness_mpc_h
    n_planes = int(math.ceil(chi_max / thickness))
    chi_edges = np.arange(n_planes + 1) * thickness
    chi_centre = 0.5 * (chi_edges[1:] + chi_edges[:-1])
    a_centre = tables.a_of_chi(chi_centre)
    simulation = ParticleMeshSimulation(tables, setup, seed, device)
    n, slabs, cell = setup.n_mesh, setup.slabs_per_box, setup.box_mpc_h / setup.n_mesh
    planes = torch.empty((n_planes, 3, slabs, n, n), dtype=torch.float32, device=device)
    plane_of_a = {float(a): i for i, a in enumerate(a_centre)}

    def project(a_out: float, positions: torch.Tensor) -> None:
        delta = simulation.total_matter_overdensity(positions, a_out)
        for axis in range(3):
            planes[plane_of_a[a_out], axis] = delta.movedim(axis, 0).reshape(slabs, n // slabs, n, n).sum(1) * cell

    simulation.run(output_a=list(plane_of_a), on_output=project, progress=progress)
    return LensPlanes(chi_edges=chi_edges, a_centre=a_centre, surface_density=planes, box=setup.box_mpc_h)


def plane_lensing_weights(planes: LensPlanes, tables: LinearTables, chi_sources: np.ndarray) -> np.ndarray:
    """[n_planes, n_sources]: (3/2) Omega_m (H0/c)^2 chi (chi_s - chi) / (chi_s a), averaged over each plane's
    thickness (the part in front of the source), so kappa = sum_i w_i Sigma_i with Sigma_i = int delta dchi."""
    weights = np.zeros((len(planes.a_centre), len(chi_sources)))
    prefactor = 1.5 * tables.omega_m / HUBBLE_DISTANCE_MPC_H**2
    for i, (lo, hi) in enumerate(zip(planes.chi_edges[:-1], planes.chi_edges[1:], strict=True)):
        for j, chi_s in enumerate(chi_sources):
            if lo >= chi_s:
                continue
            chi = np.linspace(lo, min(hi, chi_s), 65)
            kernel = chi * (chi_s - chi) / (chi_s * tables.a_of_chi(chi))
            weights[i, j] = prefactor * np.trapezoid(kernel, chi) / (hi - lo)
    return weights


@dataclass(frozen=True)
class _PlaneOrientation:
    """Where each map's rays cut one lens plane (LensTools' randomisation): the projection axis and slab
    (`choice`), a transverse shift [Mpc/h], flips of the two axes and a transposition, per map."""

    choice: torch.Tensor  # [n_maps] index into the plane's 3 * slabs_per_box projections
    shift: torch.Tensor  # [n_maps, 2] float64
    flip: torch.Tensor  # [n_maps, 2] bool
    transpose: torch.Tensor  # [n_maps] bool

    @classmethod
    def draw(cls, generator: torch.Generator, n_maps: int, n_choices: int, box: float,
             device: torch.device | str) -> _PlaneOrientation:
        choice = torch.randint(0, n_choices, (n_maps,), generator=generator).to(device)
        shift = (torch.rand((n_maps, 2), generator=generator, dtype=torch.float64) * box).to(device)
        flip = torch.randint(0, 2, (n_maps, 2), generator=generator).bool().to(device)
        transpose = torch.randint(0, 2, (n_maps,), generator=generator).bool().to(device)
        return cls(choice, shift, flip, transpose)

    def grid_coordinates(self, m: slice, x1: torch.Tensor, x2: torch.Tensor, width: float, scale: float,
                         cell: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mesh coordinates on the plane of ray positions (x1, x2) in the map's frame, [B, H, W] each, in units
        that `scale` turns into Mpc/h (angles and the plane's distance for Born, positions and 1 for rays);
        `width` is the map's size in those units (the flips mirror within it)."""
        transpose, flip = self.transpose[m, None, None], self.flip[m, :, None, None]
        t1, t2 = torch.where(transpose, x2, x1), torch.where(transpose, x1, x2)
        t1 = torch.where(flip[:, 0], width - t1, t1)
        t2 = torch.where(flip[:, 1], width - t2, t2)
        return ((self.shift[m, 0, None, None] + scale * t1) / cell,
                (self.shift[m, 1, None, None] + scale * t2) / cell)

    def to_map_frame(self, m: slice, alpha: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A deflection [B, 2, H, W] and a Hessian [B, 2, 2, H, W] of the plane's potential, in plane axes, turned
        into the map's axes: the inverse of grid_coordinates' flips, then of its transposition."""
        sign = 1.0 - 2.0 * self.flip[m].to(alpha.dtype)  # [B, 2]
        alpha = alpha * sign[:, :, None, None]
        hessian = hessian * (sign[:, :, None, None, None] * sign[:, None, :, None, None])
        swap = self.transpose[m, None, None, None]
        alpha = torch.where(swap, alpha.flip(1), alpha)
        hessian = torch.where(swap[..., None], hessian.flip(1).flip(2), hessian)
        return alpha, hessian


def _map_angles(field_deg: float, n_pix: int, device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The angles of the map's pixel centres (theta_1, theta_2) [rad], [n_pix, n_pix] each, and the field [rad]."""
    field_rad = math.radians(field_deg)
    theta = (torch.arange(n_pix, dtype=torch.float64, device=device) + 0.5) * (field_rad / n_pix)
    theta_1, theta_2 = torch.meshgrid(theta, theta, indexing="ij")
    return theta_1, theta_2, field_rad


def born_convergence(planes: LensPlanes, tables: LinearTables, source_redshifts: list[float], field_deg: float,
                     n_pix: int, n_maps: int, seed: int, chunk: int = 32) -> torch.Tensor:
    """Convergence maps [n_maps, n_sources, n_pix, n_pix] in the Born approximation; every map draws, for every
    plane, its own axis, slab, transverse shift, flips and transposition (LensTools' randomisation)."""
    device = planes.surface_density.device
    n_planes, _, slabs, n_mesh, _ = planes.surface_density.shape
    cell = planes.box / n_mesh
    chi_sources = np.array([tables.chi_of_z(z) for z in source_redshifts])
    weights = torch.as_tensor(plane_lensing_weights(planes, tables, chi_sources), dtype=torch.float32, device=device)
    theta_1, theta_2, field_rad = _map_angles(field_deg, n_pix, device)
    generator = torch.Generator().manual_seed(int(seed))
    flat_planes = planes.surface_density.reshape(n_planes, 3 * slabs, n_mesh * n_mesh)
    chi_centre = 0.5 * (planes.chi_edges[1:] + planes.chi_edges[:-1])
    maps = torch.zeros((n_maps, len(source_redshifts), n_pix, n_pix), dtype=torch.float32, device=device)
    for i in range(n_planes):
        if not weights[i].any():
            continue
        orientation = _PlaneOrientation.draw(generator, n_maps, 3 * slabs, planes.box, device)
        for start in range(0, n_maps, chunk):
            m = slice(start, min(start + chunk, n_maps))
            u, v = orientation.grid_coordinates(m, theta_1, theta_2, field_rad, chi_centre[i], cell)
            values = _bilinear_periodic(flat_planes[i, orientation.choice[m]], u, v, n_mesh)
            maps[m] += weights[i][None, :, None, None] * values[:, None]
    return maps


def plane_lensing_fields(surface_density: torch.Tensor, box: float) -> torch.Tensor:
    """[..., 5, n, n]: the deflection (alpha_1, alpha_2) and Hessian (H_11, H_22, H_12) of the potential psi with
    laplacian(psi) = 2 Sigma on the periodic plane (spectral derivatives), from the surface density Sigma
    [..., n, n] [Mpc/h]. A uniform sheet deflects no ray on a periodic plane but still focuses: its mean enters
    the Hessian's diagonal, so trace(H) = 2 Sigma everywhere, and a ray's convergence to first order is Born's.
    (So where a projection's mean is not zero, the distortion matrix is not exactly the derivative of where the
    rays land; a slab's mean is a fraction of a per cent of the pixel scatter.)"""
    n = surface_density.shape[-1]
    k = 2 * math.pi * torch.fft.fftfreq(n, d=box / n, dtype=torch.float64, device=surface_density.device)
    k_odd = torch.where(torch.arange(n, device=k.device) == n // 2, 0.0, k)  # no odd derivative at Nyquist
    k1, k2 = k[:, None], k[None, :]
    k1_odd, k2_odd = k_odd[:, None], k_odd[None, :]
    k_squared = k1**2 + k2**2
    sigma_k = torch.fft.fft2(surface_density.double())
    psi_k = torch.where(k_squared > 0, -2 * sigma_k / torch.where(k_squared > 0, k_squared, 1.0), 0.0)
    mean = surface_density.double().mean(dim=(-2, -1), keepdim=True)
    real = lambda f: torch.fft.ifft2(f).real  # noqa: E731
    fields = [real(1j * k1_odd * psi_k), real(1j * k2_odd * psi_k), real(-k1**2 * psi_k) + mean,
              real(-k2**2 * psi_k) + mean, real(-k1_odd * k2_odd * psi_k)]
    return torch.stack(fields, dim=-3).float()


def lens_distances(chi_edges: np.ndarray, chi_source: float) -> np.ndarray:
    """Where each plane lenses in multi-plane ray tracing [Mpc/h]: its centre, or for the plane holding the source
    the middle of its part in front of the source (planes beyond the source: meaningless, they carry no weight)."""
    return np.minimum(0.5 * (chi_edges[:-1] + chi_edges[1:]), 0.5 * (chi_edges[:-1] + chi_source))


def multi_plane_convergence(planes: LensPlanes, tables: LinearTables, source_redshifts: list[float],
                            field_deg: float, n_pix: int, n_maps: int, seed: int, chunk: int = 32) -> torch.Tensor:
    """Convergence maps [n_maps, n_sources, n_pix, n_pix] by multi-plane ray tracing (Hilbert et al. 2009,
    arXiv:0809.5035; LensTools' ray tracer, Petri 2016): rays leave the observer at the pixel angles, are
    deflected at every lens plane by the gradient of its potential where they cross it and travel straight in
    between; the distortion matrix A = d(source position)/d(theta) / chi_s follows them through the planes'
    Hessians, and kappa = 1 - trace(A) / 2. Same planes and per-map randomisation as born_convergence (the same
    seed draws the same orientations), and each plane's strength is set so that to first order in the potential
    these maps are the Born maps: what differs is the post-Born part (lens-lens coupling, rays off the straight
    line; Petri, Haiman & May 2017, arXiv:1612.00852). The plane in which a source sits lenses from the middle of
    its part in front of the source, where Born samples it at its centre: for a source well inside a plane the
    first orders differ by that (0.8 % of kappa's rms with the source 0.4 of the way into a 128 Mpc/h plane)."""
    device = planes.surface_density.device
    n_planes, _, slabs, n_mesh, _ = planes.surface_density.shape
    cell = planes.box / n_mesh
    chi_sources = np.array([tables.chi_of_z(z) for z in source_redshifts])
    weights = plane_lensing_weights(planes, tables, chi_sources)
    theta_1, theta_2, field_rad = _map_angles(field_deg, n_pix, device)
    generator = torch.Generator().manual_seed(int(seed))
    orientations = {i: _PlaneOrientation.draw(generator, n_maps, 3 * slabs, planes.box, device)
                    for i in range(n_planes) if weights[i].any()}  # Born's draws, in Born's order
    fields = {i: plane_lensing_fields(planes.surface_density[i].reshape(3 * slabs, n_mesh, n_mesh), planes.box)
              .reshape(3 * slabs, 5, n_mesh * n_mesh) for i in orientations}
    maps = torch.zeros((n_maps, len(source_redshifts), n_pix, n_pix), dtype=torch.float32, device=device)
    for j, chi_s in enumerate(chi_sources):
        chi_lens = lens_distances(planes.chi_edges, chi_s)
        lenses = [(i, float(chi_lens[i]), weights[i, j]) for i in orientations if weights[i, j] > 0]
        for start in range(0, n_maps, chunk):
            m = slice(start, min(start + chunk, n_maps))
            _, jacobian = _trace_rays(lenses, orientations, fields, m, theta_1, theta_2, chi_s, field_rad, cell)
            maps[m, j] = (1.0 - 0.5 * (jacobian[:, 0, 0] + jacobian[:, 1, 1]) / chi_s).float()
    return maps


def _trace_rays(lenses: list[tuple[int, float, float]], orientations: dict[int, _PlaneOrientation],
                fields: dict[int, torch.Tensor], m: slice, theta_1: torch.Tensor, theta_2: torch.Tensor, chi_s: float,
                field_rad: float, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays leaving the observer at angles (theta_1, theta_2) [H, W] for maps `m`, through `lenses` (plane index,
    distance [Mpc/h], Born weight for this source) in order of distance: their comoving positions at the source
    [B, 2, H, W] and d(position)/d(theta) there [B, 2, 2, H, W] (the distortion matrix times chi_s)."""
    size, device = m.stop - m.start, theta_1.device
    n_mesh = math.isqrt(fields[lenses[0][0]].shape[-1]) if lenses else 1
    x = torch.zeros((size, 2, *theta_1.shape), dtype=torch.float64, device=device)  # [Mpc/h], map frame
    direction = torch.stack([theta_1, theta_2]).expand(size, -1, -1, -1).clone()  # dx / dchi
    jacobian = torch.zeros((size, 2, 2, *theta_1.shape), dtype=torch.float64, device=device)  # dx / dtheta
    direction_jacobian = torch.eye(2, dtype=torch.float64, device=device)[None, :, :, None, None].expand(
        size, -1, -1, *theta_1.shape).clone()
    chi = 0.0
    for i, chi_lens, weight in lenses:
        x = x + (chi_lens - chi) * direction
        jacobian = jacobian + (chi_lens - chi) * direction_jacobian
        chi = chi_lens
        orientation = orientations[i]
        u, v = orientation.grid_coordinates(m, x[:, 0], x[:, 1], chi_lens * field_rad, 1.0, cell)
        chosen = fields[i][orientation.choice[m]]  # [B, 5, n_mesh^2]
        sampled = _bilinear_periodic(chosen, u, v, n_mesh).double()
        hessian = torch.stack([torch.stack([sampled[:, 2], sampled[:, 4]], 1),
                               torch.stack([sampled[:, 4], sampled[:, 3]], 1)], 1)
        alpha, hessian = orientation.to_map_frame(m, sampled[:, :2], hessian)
        # the kick that makes this plane's first-order convergence w * Sigma, Born's
        strength = weight * chi_s / (chi_lens * (chi_s - chi_lens))
        direction = direction - strength * alpha
        hessian_jacobian = (hessian[:, :, :, None] * jacobian[:, None]).sum(2)  # H @ J per ray (2 x 2)
        direction_jacobian = direction_jacobian - strength * hessian_jacobian
    return x + (chi_s - chi) * direction, jacobian + (chi_s - chi) * direction_jacobian


def _bilinear_periodic(planes: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n: int) -> torch.Tensor:
    """planes [B, n*n], or [B, F, n*n] (F fields read at the same points: the corners and weights found once),
    sampled at grid coordinates (u, v) [B, H, W], periodic: [B, H, W] or [B, F, H, W] float32."""
    fields = planes if planes.ndim == 3 else planes[:, None]
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = (u - u0).float()[:, None], (v - v0).float()[:, None]
    i0, j0 = torch.remainder(u0.long(), n), torch.remainder(v0.long(), n)
    i1, j1 = torch.remainder(i0 + 1, n), torch.remainder(j0 + 1, n)
    shape = (len(fields), fields.shape[1], *u.shape[1:])

    def value(i, j):
        index = (i * n + j).reshape(len(fields), 1, -1).expand(-1, fields.shape[1], -1)
        return torch.gather(fields, 2, index).reshape(shape)

    sampled = ((1 - fu) * (1 - fv) * value(i0, j0) + fu * (1 - fv) * value(i1, j0)
               + (1 - fu) * fv * value(i0, j1) + fu * fv * value(i1, j1))
    return sampled if planes.ndim == 3 else sampled[:, 0]


def maps_per_simulation(n_maps: int, n_simulations: int) -> list[int]:
    """How many of a class's `n_maps` maps of a split each of its simulations gives: evenly, the first ones one
    more when they do not divide."""
    return [n_maps // n_simulations + (i < n_maps % n_simulations) for i in range(n_simulations)]


def simulation_offsets(simulations: Mapping[str, int]) -> dict[str, int]:
    """The number of each split's first simulation when the suite's simulations are numbered over train, val and
    test in that order (`simulation_of_maps`, `simulation_folds`)."""
    bounds = np.cumsum([0] + [simulations[split] for split in ("train", "val", "test")])
    return {split: int(bounds[i]) for i, split in enumerate(("train", "val", "test"))}


def simulation_of_maps(labels: np.ndarray, simulations: Mapping[str, int], split: str) -> np.ndarray:
    """Which simulation each map of a whole stored split came from, numbered over the suite's train, val and test
    simulations (`simulation_offsets`), from the maps' class indices as the split stores them: each class's maps, in
    order, are its simulations' maps one simulation after the other (``NBodySuite.convergence_maps``). With matched
    phases, one number is the same initial phases in every class. Maps of one simulation share its modes: errors
    that treat them as independent are too small (experiments/lensing_nbody/simulation_cv.py resamples
    simulations instead)."""
    labels = np.asarray(labels)
    n_simulations = simulations[split]
    simulation = np.empty(len(labels), dtype=np.int64)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        simulation[members] = np.repeat(np.arange(n_simulations), maps_per_simulation(len(members), n_simulations))
    return simulation_offsets(simulations)[split] + simulation


def simulation_folds(simulations: Mapping[str, int], fold: int) -> dict[str, np.ndarray]:
    """The simulations each split holds in `fold`, numbered over the suite's train, val and test simulations in
    that order: all of them rotated by fold x the number of test simulations, then dealt to train, val and test in
    the suite's numbers. Fold 0 is the suite's own splits; successive folds test successive simulations."""
    total = sum(simulations[split] for split in ("train", "val", "test"))
    order = np.roll(np.arange(total), -fold * simulations["test"])
    first = simulation_offsets(simulations)
    return {split: order[first[split]:first[split] + simulations[split]] for split in ("train", "val", "test")}


# ----- a suite of simulations for the data module ------------------------------------------------------------
_SUITE_KEYS = ("box_mpc_h", "n_particles", "n_mesh", "n_steps", "z_init", "slabs_per_box", "simulations",
               "matched_phases", "device", "workers", "ray_tracing")
RAY_TRACING = {"born": born_convergence, "multi_plane": multi_plane_convergence}
_LIGHT_CONE_SCHEMA = 4


class NBodySuite:
    """The simulations behind N-body convergence maps: `simulations[split]` per cosmology and split, each ray
    traced into many maps; with `matched_phases` the cosmologies share initial phases simulation by simulation.
    Light cones are cached on disk, so an interrupted suite resumes from the simulations it finished. With
    `workers` > 1 the simulations of a split run in that many processes side by side (one torch thread each: a
    PM step's painting and FFTs gain far less from threads than independent simulations gain from processes).
    `ray_tracing`: "born" or "multi_plane" (RAY_TRACING), from the same light cones."""

    def __init__(self, setup: ParticleMeshSetup, simulations: dict[str, int], matched_phases: bool = True,
                 device: str = "cpu", workers: int = 1, ray_tracing: str = "born") -> None:
        self.setup, self.simulations = setup, dict(simulations)
        check_positive("data.nbody.workers", workers, integer=True)
        check_choice("data.nbody.ray_tracing", ray_tracing, tuple(RAY_TRACING))
        self.matched_phases, self.device, self.workers = bool(matched_phases), device, int(workers)
        self.ray_tracing = ray_tracing
        self._tables: dict[str, LinearTables] = {}
        # light cones simulated by workers without a disk cache to hand them over, until their maps are drawn
        self._simulated: dict[str, dict[str, np.ndarray]] = {}

    @classmethod
    def from_config(cls, cfg: dict, key_prefix: str = "data.nbody") -> NBodySuite:
        cfg = dict(cfg)
        check_keys(key_prefix, cfg, _SUITE_KEYS)
        simulations = cfg.pop("simulations", None) or {}
        if not isinstance(simulations, Mapping):  # e.g. a shell's brace expansion split {train:16,val:4,test:4}
            raise ConfigError(f"{key_prefix}.simulations={simulations!r}: must be a mapping like "
                              "{train: 8, val: 2, test: 2} (quote it on a shell command line)")
        simulations = dict(simulations)
        check_keys(f"{key_prefix}.simulations", simulations, ("train", "val", "test"))
        simulations = {"train": 4, "val": 1, "test": 1} | simulations
        for split, n in simulations.items():
            check_positive(f"{key_prefix}.simulations.{split}", n, integer=True)
        device = cfg.pop("device", "cpu")
        check_choice(f"{key_prefix}.device", device, ("cpu", "cuda"))
        workers = cfg.pop("workers", 1)
        check_positive(f"{key_prefix}.workers", workers, integer=True)
        if workers > 1 and device == "cuda":
            raise ConfigError(f"{key_prefix}.workers={workers}: side-by-side processes are for CPU cores; with "
                              f"{key_prefix}.device=cuda use {key_prefix}.workers=1")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{key_prefix}.device=cuda: no CUDA device here; use {key_prefix}.device=cpu")
        matched = cfg.pop("matched_phases", True)
        if not isinstance(matched, bool):
            raise ConfigError(f"{key_prefix}.matched_phases={matched!r}: must be true or false")
        ray_tracing = cfg.pop("ray_tracing", "born")
        check_choice(f"{key_prefix}.ray_tracing", ray_tracing, tuple(RAY_TRACING))
        return cls(ParticleMeshSetup(**cfg, key_prefix=key_prefix), simulations, matched, device, workers, ray_tracing)

    def metadata(self) -> dict:
        return self.setup.as_dict() | {"simulations": self.simulations, "matched_phases": self.matched_phases,
                                       "ray_tracing": self.ray_tracing}

    @staticmethod
    def tables_key(cosmology: Cosmology) -> str:
        return repr(cosmology.physics_dict())

    def tables(self, cosmology: Cosmology, cache_dir: str | Path | None) -> LinearTables:
        key = self.tables_key(cosmology)
        if key not in self._tables:
            # CAMB's transfer functions up to the corner of the force mesh's Fourier cube.
            k_max = 1.1 * math.sqrt(3) * math.pi * self.setup.n_mesh / self.setup.box_mpc_h
            self._tables[key] = linear_tables(cosmology, self.setup.z_init, k_max, cache_dir)
        return self._tables[key]

    def check_light_cone(self, source_redshifts: list[float], field_deg: float, cosmology: Cosmology,
                         cache_dir: str | Path | None) -> None:
        """Refuse sources the simulations cannot reach and maps wider than the box at the source distance."""
        z_far = max(source_redshifts)
        if z_far >= self.setup.z_init:
            raise ConfigError(f"data.source_redshifts={list(source_redshifts)}: beyond the simulated light cone, "
                              f"which starts at data.nbody.z_init={self.setup.z_init}; use sources at lower z")
        chi_far = self.tables(cosmology, cache_dir).chi_of_z(z_far)
        width = math.radians(field_deg) * chi_far
        if width > self.setup.box_mpc_h:
            raise ConfigError(f"data.nbody.box_mpc_h={self.setup.box_mpc_h}: smaller than the map's transverse "
                              f"size at z_s={z_far} ({field_deg} deg x {chi_far:.0f} Mpc/h = {width:.0f} Mpc/h), so "
                              f"the map would repeat the box; use a box >= {math.ceil(width)} or a smaller field")

    def simulation_seeds(self, split: str, seed: int, class_index: int) -> list[int]:
        """The initial-condition seeds of a split's simulations of one cosmology (shared by all cosmologies with
        matched phases)."""
        return [derived_seed(seed, i) if self.matched_phases else derived_seed(seed, i, class_index)
                for i in range(self.simulations[split])]

    def chi_max(self, cosmology: Cosmology, source_redshifts: list[float], cache_dir: str | Path | None) -> float:
        """How deep the light cone must reach: the distance of the farthest source [Mpc/h]."""
        tables = self.tables(cosmology, cache_dir)
        return max(tables.chi_of_z(z) for z in source_redshifts)

    def light_cone_key(self, cosmology: Cosmology, seed: int, chi_max: float) -> dict:
        return {"schema": _LIGHT_CONE_SCHEMA, "tables": _TABLES_SCHEMA, "setup": self.setup.as_dict(),
                "cosmology": cosmology.physics_dict(), "seed": int(seed), "chi_max": round(chi_max, 3)}

    @staticmethod
    def light_cone_dir(cache_dir: str | Path | None) -> Path | None:
        return None if cache_dir is None else Path(cache_dir) / "nbody"

    def simulate_light_cones(self, simulations: list[tuple[Cosmology, int]], source_redshifts: list[float],
                             cache_dir: str | Path | None, description: str = "N-body simulations") -> None:
        """Simulate the light cones of `simulations` (cosmology, seed) not yet on disk in `workers` processes
        side by side; `light_cone` then takes them from the cache (or from memory without one). Nothing to do
        with one worker: `light_cone` simulates each when it is needed."""
        if self.workers == 1:
            return
        pending: dict[str, tuple[Cosmology, int, float]] = {}
        for cosmology, seed in simulations:
            chi_max = self.chi_max(cosmology, source_redshifts, cache_dir)  # CAMB's tables made here, for all
            key = self.light_cone_key(cosmology, seed, chi_max)
            path = cache_file("light_cone", key, self.light_cone_dir(cache_dir))
            text = json.dumps(key, sort_keys=True)
            if (path is None or not path.is_file()) and text not in self._simulated:
                pending[text] = (cosmology, seed, chi_max)
        if not pending:
            return
        n_workers = min(self.workers, len(pending))
        pool = spawned_pool(n_workers)  # each worker a clean torch with one thread
        try:
            futures = {pool.submit(_simulate_light_cone, self.setup, self.device, self.tables(cosmology, cache_dir),
                                   cosmology, seed, chi_max, cache_dir): text
                       for text, (cosmology, seed, chi_max) in pending.items()}
            for future in track(as_completed(futures), total=len(futures),
                                description=f"{description}: {len(futures)} light cones, {n_workers} workers"):
                arrays = future.result()
                if cache_dir is None:
                    self._simulated[futures[future]] = arrays
        finally:
            pool.shutdown(cancel_futures=True)

    def light_cone(self, cosmology: Cosmology, seed: int, chi_max: float, cache_dir: str | Path | None,
                   description: str = "") -> LensPlanes:
        """The lens planes of one simulation, from the disk cache or simulated (and cached)."""
        arrays = self.light_cone_arrays(cosmology, seed, chi_max, cache_dir, description)
        return LensPlanes(arrays["chi_edges"], arrays["a_centre"],
                          torch.from_numpy(arrays["surface_density"]).to(self.device), self.setup.box_mpc_h)

    def light_cone_arrays(self, cosmology: Cosmology, seed: int, chi_max: float, cache_dir: str | Path | None,
                          description: str = "") -> dict[str, np.ndarray]:
        tables = self.tables(cosmology, cache_dir)
        key = self.light_cone_key(cosmology, seed, chi_max)
        simulated = self._simulated.pop(json.dumps(key, sort_keys=True), None)
        if simulated is not None:
            return simulated

        def simulate() -> dict[str, np.ndarray]:
            start = time.perf_counter()
            planes = light_cone_planes(tables, self.setup, chi_max, seed, self.device)
            log.info("N-body %s: %d^3 particles, %d steps, %d lens planes in %.0f s", description,
                     self.setup.n_particles, self.setup.n_steps, len(planes.a_centre), time.perf_counter() - start)
            return {"chi_edges": planes.chi_edges, "a_centre": planes.a_centre,
                    "surface_density": planes.surface_density.cpu().numpy()}

        return cached_arrays("light_cone", key, self.light_cone_dir(cache_dir), simulate)

    def convergence_maps(self, cosmology: Cosmology, split: str, n_maps: int, source_redshifts: list[float],
                         field_deg: float, n_pix: int, seed: int, class_index: int,
                         cache_dir: str | Path | None) -> torch.Tensor:
        """`n_maps` noise-free maps [n, n_z, n_pix, n_pix] spread evenly over the split's simulations."""
        tables = self.tables(cosmology, cache_dir)
        chi_max = self.chi_max(cosmology, source_redshifts, cache_dir)
        n_sims = self.simulations[split]
        counts = maps_per_simulation(n_maps, n_sims)
        maps = []
        for i, (count, sim_seed) in enumerate(zip(counts, self.simulation_seeds(split, seed, class_index),
                                                  strict=True)):
            planes = self.light_cone(cosmology, sim_seed, chi_max, cache_dir,
                                     f"{split} simulation {i + 1}/{n_sims}, M_nu={cosmology.m_nu_ev} eV")
            if count:
                ray_trace = RAY_TRACING[self.ray_tracing]
                maps.append(ray_trace(planes, tables, source_redshifts, field_deg, n_pix, count,
                                      seed=derived_seed(sim_seed, "rays", class_index)).cpu())
        return torch.cat(maps) if maps else torch.empty(0, len(source_redshifts), n_pix, n_pix)


def _simulate_light_cone(setup: ParticleMeshSetup, device: str, tables: LinearTables, cosmology: Cosmology,
                         seed: int, chi_max: float, cache_dir: str | Path | None) -> dict[str, np.ndarray] | None:
    """One light cone in a worker process (NBodySuite.simulate_light_cones), from the parent's CAMB tables: written
    to the cache, or returned when there is none."""
    suite = NBodySuite(setup, {}, device=device)
    suite._tables[suite.tables_key(cosmology)] = tables
    arrays = suite.light_cone_arrays(cosmology, seed, chi_max, cache_dir)
    return arrays if cache_dir is None else None
