"""Photon transport in xenon gas for the NEXT simulator (issue 15): photoelectric absorption with xenon K-shell
fluorescence, Compton scattering (Klein-Nishina) and pair production, with NIST XCOM cross sections per process
(numl.sim.petalo.xenon, shared with the PETALO simulator). Photons are followed through the detector box
until they are absorbed or leave it; the electrons (and positrons) they set moving are returned for the
electron transport of numl.sim.next.generator, which returns its bremsstrahlung photons and annihilation
photons here.

Coherent (Rayleigh) scattering is left out, as in numl.sim.petalo.transport: it deposits nothing and turns
photons by small angles (it is below 4 % of the attenuation above 100 keV).
"""

from __future__ import annotations

import numpy as np

from numl.sim.petalo.xenon import (
    ELECTRON_MASS_KEV,
    PAIR_NUCLEAR_THRESHOLD_KEV,
    cross_sections,
    load_table,
    sample_compton_energy_fraction,
)

#: xenon K-shell binding energy (K absorption edge), keV: 34.5614 (XCOM MDATX3.054; Bearden & Burr 1967: 34.561)
K_BINDING_KEV = 34.5614
#: L1-shell binding energy, keV (XCOM MDATX3.054 L1 edge, 5.453): given to the photoelectron's local deposit
#: when the photon is absorbed on a shell above K (L and M X-rays and Auger electrons of a few keV travel
#: < 1 mm at 15 bar, inside a voxel)
L1_BINDING_KEV = 5.453
#: K-shell fluorescence yield of xenon, 0.889 (Krause, J. Phys. Chem. Ref. Data 8 (1979) 307)
K_FLUORESCENCE_YIELD = 0.889
#: K-alpha: Kalpha1 29.779 keV and Kalpha2 29.458 keV (X-ray Data Booklet, LBNL 2009, Table 1-2), intensities
#: 100 : 54 (ibid.), as one line at their weighted mean 29.67 keV
K_ALPHA_KEV = (29.779 * 100 + 29.458 * 54) / 154
#: K-beta: Kbeta1 33.624 keV (X-ray Data Booklet), Kbeta2 34.42 keV, as one line at 33.62 keV
K_BETA_KEV = 33.624
#: fraction of K X-rays that are K-beta: Kbeta / Kalpha = 0.22 for Z = 54 (Scofield, Phys. Rev. A 9 (1974) 1041,
#: Kbeta/Kalpha ~ 0.21-0.23 near xenon), so 0.22 / 1.22
K_BETA_FRACTION = 0.22 / 1.22
#: photons below this energy are absorbed where they are: the XCOM table's lower end, where the mean free path
#: in 15 bar xenon is 0.7 mm (photoelectric 166 cm^2/g at 10 keV, rho = 0.089 g/cm^3)
PHOTON_ABSORB_BELOW_KEV = 10.0
#: above this electron kinetic energy (in units of m c^2) the photoelectron follows the photon (Geant4
#: G4SauterGavrilaAngularDistribution's limit, tau > 50)
SAUTER_TAU_LIMIT = 50.0


def k_shell_fraction() -> float:
    """Probability that a photoabsorption above the K edge is on the K shell: 1 - 1/J_K, J_K the ratio of XCOM's
    photoelectric cross section just above and just below the K edge (7073 / 1181 b: 0.833)."""
    table = load_table()
    edge = np.flatnonzero(np.isclose(table["energy_kev"], K_BINDING_KEV, atol=1e-3))
    below, above = table["photoelectric_b"][edge[0]], table["photoelectric_b"][edge[-1]]
    return float(1 - below / above)


def cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (n, 3) arrays: the same floating-point operations as np.cross (bit for bit),
    without its axis handling, which dominated the electron stepping loop's overhead."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


def perpendicular_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to each row of `direction` (and to each other)."""
    helper = np.zeros_like(direction)
    helper[np.arange(len(direction)), np.argmin(np.abs(direction), axis=1)] = 1.0
    u = cross_rows(direction, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, cross_rows(direction, u)


def rotate(direction: np.ndarray, cos_theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unit vectors at polar angle acos(cos_theta) and azimuth phi around each row of `direction`."""
    u, v = perpendicular_basis(direction)
    sin_theta = np.sqrt(np.clip(1 - cos_theta**2, 0, None))
    out = cos_theta[:, None] * direction + sin_theta[:, None] * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def isotropic(rng: np.random.Generator, n: int) -> np.ndarray:
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    return np.column_stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t])


def sample_sauter_cos_theta(rng: np.random.Generator, kinetic_kev: np.ndarray) -> np.ndarray:
    """Polar angle of a K-shell photoelectron to the photon direction from Sauter's distribution, sampled as
    Geant4's G4SauterGavrilaAngularDistribution does (rejection in z = 1 - cos theta)."""
    tau = np.asarray(kinetic_kev, dtype=np.float64) / ELECTRON_MASS_KEV
    out = np.ones(tau.size)
    todo = np.flatnonzero(tau <= SAUTER_TAU_LIMIT)
    gamma = tau + 1
    beta = np.sqrt(tau * (tau + 2)) / gamma
    a = (1 - beta) / np.maximum(beta, 1e-12)
    ap2 = a + 2
    b = 0.5 * beta * gamma * (gamma - 1) * (gamma - 2)
    g_max = 2 * (1 + a * b) / np.maximum(a, 1e-12)
    while todo.size:
        q = rng.uniform(size=todo.size)
        at, ap, bt = a[todo], ap2[todo], b[todo]
        z = 2 * at * (2 * q + ap * np.sqrt(q)) / (ap**2 - 4 * q)
        g = (2 - z) * (1 / (at + z) + bt)
        ok = rng.uniform(size=todo.size) * g_max[todo] <= g
        out[todo[ok]] = 1 - z[ok]
        todo = todo[~ok]
    return np.clip(out, -1, 1)


def sample_pair_cos_theta(rng: np.random.Generator, kinetic_kev: np.ndarray) -> np.ndarray:
    """Polar angle of a pair-produced lepton to the photon, Geant4's G4ModifiedTsai: u = -ln(r1 r2) / a with
    a = 1.6 (probability 1/4) or 1.6 / 3, u below u_max = 2 gamma, cos theta = 1 - 2 u^2 / u_max^2."""
    u_max = 2 * (1 + np.asarray(kinetic_kev, dtype=np.float64) / ELECTRON_MASS_KEV)
    out = np.empty(u_max.size)
    todo = np.arange(u_max.size)
    while todo.size:
        u = -np.log(rng.uniform(size=todo.size) * rng.uniform(size=todo.size))
        u = np.where(rng.uniform(size=todo.size) < 0.25, u / 1.6, u / (1.6 / 3))
        ok = u <= u_max[todo]
        out[todo[ok]] = 1 - 2 * u[ok] ** 2 / u_max[todo[ok]] ** 2
        todo = todo[~ok]
    return out


def distance_to_exit(pos: np.ndarray, direction: np.ndarray, size_mm: np.ndarray) -> np.ndarray:
    """Path length from points inside the box [0, size] to its surface along `direction`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(direction > 0, (size_mm - pos) / direction, np.where(direction < 0, -pos / direction, np.inf))
    return np.clip(t.min(axis=1), 0, None)


def transport_photons(rng: np.random.Generator, size_mm: np.ndarray, density_g_cm3: float, pos: np.ndarray,
                      direction: np.ndarray, energy_kev: np.ndarray, owner: np.ndarray) -> dict[str, np.ndarray]:
    """Follow photons (inside the box [0, size_mm]) until absorbed or out of the box.

    Per step: the free path is exponential with XCOM's attenuation (incoherent + photoelectric + pair) at the
    photon's energy; beyond the box surface the photon escapes. Otherwise the process is drawn in proportion to
    its cross section:
    - photoelectric: on the K shell with probability k_shell_fraction() above the K edge; the photoelectron
      gets E - B (B = K or L1 binding) along Sauter's distribution; after a K vacancy a K-alpha or K-beta X-ray
      (fluorescence yield 0.889) is emitted isotropically and followed like any photon, the rest of B is
      deposited at the point (Auger electrons, L/M X-rays);
    - Compton: E'/E from Klein-Nishina on a free electron at rest (Butcher-Messel, as Geant4's
      G4KleinNishinaCompton), the electron gets E - E' along the momentum transfer, the photon goes on;
    - pair production (nuclear and electron field): the kinetic energy E - 2 m c^2 is shared uniformly between
      electron and positron (Geant4's G4BetheHeitlerModel below 2 MeV; used here up to 3 MeV as an
      approximation, the screened Bethe-Heitler spectrum being still nearly flat there), angles from
      G4ModifiedTsai, opposite azimuths.
    Photons below PHOTON_ABSORB_BELOW_KEV are absorbed where they are.

    Returns the charged particles set moving (position, direction, kinetic energy, owner, positron flag, and
    pair id: both leptons of one pair share it, -1 otherwise), local deposits (position, energy, owner), the
    energy that left the box per photon owner (escaped_owner / escaped_kev), and the number of interactions by
    process."""
    size_mm = np.asarray(size_mm, dtype=np.float64)
    k_fraction = k_shell_fraction()
    pos, d = pos.astype(np.float64).copy(), direction.astype(np.float64).copy()
    e, own = energy_kev.astype(np.float64).copy(), owner.astype(np.int64).copy()
    el = {"pos": [], "dir": [], "kev": [], "owner": [], "positron": [], "pair": []}
    loc = {"pos": [], "kev": [], "owner": []}
    esc_owner, esc_kev = [], []
    counts = {"photoelectric": 0, "compton": 0, "pair": 0, "k_xray": 0}
    n_pairs = 0

    def emit(p, dirs, kev, owners, positron=False, pair=None):
        el["pos"].append(p)
        el["dir"].append(dirs)
        el["kev"].append(kev)
        el["owner"].append(owners)
        el["positron"].append(np.full(len(kev), positron))
        el["pair"].append(np.full(len(kev), -1, np.int64) if pair is None else pair)

    while e.size:
        soft = e < PHOTON_ABSORB_BELOW_KEV
        if soft.any():
            loc["pos"].append(pos[soft])
            loc["kev"].append(e[soft])
            loc["owner"].append(own[soft])
            pos, d, e, own = pos[~soft], d[~soft], e[~soft], own[~soft]
            if not e.size:
                break
        xs = cross_sections(e)
        total = xs.total_without_coherent
        free_path = rng.exponential(10.0 / (total * density_g_cm3))
        out = free_path >= distance_to_exit(pos, d, size_mm)
        esc_owner.append(own[out])
        esc_kev.append(e[out])
        keep = ~out
        pos = pos[keep] + free_path[keep, None] * d[keep]
        d, e, own = d[keep], e[keep], own[keep]
        pick = rng.uniform(size=e.size) * total[keep]
        photo = pick < xs.photoelectric[keep]
        compton = ~photo & (pick < xs.photoelectric[keep] + xs.incoherent[keep])
        pair = ~photo & ~compton
        counts["photoelectric"] += int(photo.sum())
        counts["compton"] += int(compton.sum())
        counts["pair"] += int(pair.sum())
        new_pos, new_d, new_e, new_own = [], [], [], []

        # photoelectric absorption
        if photo.any():
            ep, pp, dp, op = e[photo], pos[photo], d[photo], own[photo]
            k_shell = (ep > K_BINDING_KEV) & (rng.uniform(size=ep.size) < k_fraction)
            binding = np.where(k_shell, K_BINDING_KEV, L1_BINDING_KEV)
            kinetic = ep - binding
            cos_t = sample_sauter_cos_theta(rng, kinetic)
            emit(pp, rotate(dp, cos_t, rng.uniform(0, 2 * np.pi, ep.size)), kinetic, op)
            fluoresce = k_shell & (rng.uniform(size=ep.size) < K_FLUORESCENCE_YIELD)
            xray = np.where(rng.uniform(size=ep.size) < K_BETA_FRACTION, K_BETA_KEV, K_ALPHA_KEV)
            local = binding - np.where(fluoresce, xray, 0.0)
            loc["pos"].append(pp)
            loc["kev"].append(local)
            loc["owner"].append(op)
            if fluoresce.any():
                counts["k_xray"] += int(fluoresce.sum())
                new_pos.append(pp[fluoresce])
                new_d.append(isotropic(rng, int(fluoresce.sum())))
                new_e.append(xray[fluoresce])
                new_own.append(op[fluoresce])

        # Compton scattering
        if compton.any():
            ec, pc, dc, oc = e[compton], pos[compton], d[compton], own[compton]
            eps = sample_compton_energy_fraction(ec, rng)
            cos_t = np.clip(1 - (1 - eps) / (eps * ec / ELECTRON_MASS_KEV), -1, 1)
            scattered = rotate(dc, cos_t, rng.uniform(0, 2 * np.pi, ec.size))
            momentum = ec[:, None] * dc - (eps * ec)[:, None] * scattered  # the electron's, keV/c
            norm = np.linalg.norm(momentum, axis=1, keepdims=True)
            emit(pc, np.where(norm > 0, momentum / np.maximum(norm, 1e-300), dc), ec * (1 - eps), oc)
            new_pos.append(pc)
            new_d.append(scattered)
            new_e.append(eps * ec)
            new_own.append(oc)

        # pair production
        if pair.any():
            ea, pa, da, oa = e[pair], pos[pair], d[pair], own[pair]
            kinetic = np.clip(ea - PAIR_NUCLEAR_THRESHOLD_KEV, 0, None)
            share = rng.uniform(size=ea.size)
            t_minus, t_plus = share * kinetic, (1 - share) * kinetic
            phi = rng.uniform(0, 2 * np.pi, ea.size)
            ids = n_pairs + np.arange(ea.size)
            n_pairs += ea.size
            emit(pa, rotate(da, sample_pair_cos_theta(rng, t_minus), phi), t_minus, oa, pair=ids)
            emit(pa, rotate(da, sample_pair_cos_theta(rng, t_plus), phi + np.pi), t_plus, oa, positron=True, pair=ids)

        if new_e:
            pos, d, e, own = (np.concatenate(new_pos), np.concatenate(new_d), np.concatenate(new_e),
                              np.concatenate(new_own))
        else:
            break

    def cat(chunks, shape, dtype=np.float64):
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(shape, dtype)

    return {
        "electron_mm": cat(el["pos"], (0, 3)), "electron_dir": cat(el["dir"], (0, 3)),
        "electron_kev": cat(el["kev"], (0,)), "electron_owner": cat(el["owner"], (0,), np.int64),
        "electron_positron": cat(el["positron"], (0,), bool), "electron_pair": cat(el["pair"], (0,), np.int64),
        "local_mm": cat(loc["pos"], (0, 3)), "local_kev": cat(loc["kev"], (0,)),
        "local_owner": cat(loc["owner"], (0,), np.int64),
        "escaped_owner": cat(esc_owner, (0,), np.int64), "escaped_kev": cat(esc_kev, (0,)),
        "counts": counts,
    }
