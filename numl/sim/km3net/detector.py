"""KM3NeT detector geometry: PMT positions and orientations, generated ORCA-like or read from a .detx file.

A detector is a flat table of PMTs (position in metres, unit pointing direction, DOM / DU / channel ids).
Real geometries are read with ``km3det`` (the KM3NeT collaboration's light-weight detx/datx reader); the
generated one reproduces the KM3NeT multi-PMT DOM layout measured from the ORCA detx files shipped in
``km3net-testdata``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from numl.sim.km3net.physics import k40_pair_rate_hz
from numl.utils.errors import ConfigError, check_positive

#: PMTs of one KM3NeT DOM as (zenith of the pointing direction in deg, number in the ring, azimuth offset in deg),
#: measured from orca_115strings_av23min20mhorizontal_18OMs_alt9mvertical_v1.detx (km3net-testdata): 31 PMTs,
#: 12 looking up and 19 looking down.
DOM_PMT_RINGS_DEG = ((56.1, 6, 30.0), (72.8, 6, 0.0), (107.2, 6, 30.0), (123.8, 6, 0.0), (147.9, 6, 30.0),
                     (180.0, 1, 0.0))
#: distance of a PMT photocathode from the DOM centre (0.16-0.22 m in the same detx file)
DOM_PMT_RADIUS_M = 0.2


@dataclass(frozen=True)
class Detector:
    """Flat PMT table. Arrays have one row per PMT."""

    pmt_pos_m: np.ndarray  # (n_pmt, 3)
    pmt_dir: np.ndarray  # (n_pmt, 3) unit vectors the PMTs look along
    dom_id: np.ndarray  # (n_pmt,) int64
    du_id: np.ndarray  # (n_pmt,) int64
    channel_id: np.ndarray  # (n_pmt,) int64, 0..30 within the DOM
    det_id: int = -1
    name: str = "generated"

    @property
    def n_pmts(self) -> int:
        return len(self.pmt_pos_m)

    @property
    def n_doms(self) -> int:
        return len(np.unique(self.dom_id))

    @property
    def center_m(self) -> np.ndarray:
        return self.pmt_pos_m.mean(axis=0)

    @property
    def dom_index(self) -> np.ndarray:
        """Dense 0..n_doms-1 index of each PMT's DOM (for coincidence look-ups)."""
        return np.unique(self.dom_id, return_inverse=True)[1]

    @cached_property
    def dom_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(DOM centres (D, 3), PMT rows per DOM (D, K) padded with -1, PMT offsets from their DOM centre (D, K, 3)),
        rows of D in dom_index order: light computed per DOM, then spread over its PMTs."""
        dom_of_pmt = self.dom_index
        pmts_per_dom = np.bincount(dom_of_pmt)
        centre = np.stack([np.bincount(dom_of_pmt, self.pmt_pos_m[:, a]) for a in range(3)], 1) / pmts_per_dom[:, None]
        order = np.argsort(dom_of_pmt, kind="stable")
        rank = np.arange(len(order)) - np.repeat(np.cumsum(pmts_per_dom) - pmts_per_dom, pmts_per_dom)
        rows = np.full((len(pmts_per_dom), int(pmts_per_dom.max())), -1, dtype=np.int64)
        rows[dom_of_pmt[order], rank] = order
        offset = np.where(rows[..., None] >= 0, self.pmt_pos_m[rows] - centre[:, None, :], 0.0)
        return centre, rows, offset

    @cached_property
    def dom_pmt_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair of PMTs on one DOM: (first rows, second rows, cosine of the angle between their axes)."""
        rows = self.dom_tables[1]
        first, second = np.triu_indices(rows.shape[1], 1)
        a, b = rows[:, first].ravel(), rows[:, second].ravel()
        both = (a >= 0) & (b >= 0)
        a, b = a[both], b[both]
        return a, b, np.einsum("ij,ij->i", self.pmt_dir[a], self.pmt_dir[b])

    @cached_property
    def k40_pair_cumulative_rate_hz(self) -> np.ndarray:
        """Cumulative genuine K-40 coincidence rate over dom_pmt_pairs (physics.k40_pair_rate_hz), computed once: the
        full ORCA has a million pairs, drawn from for every simulated trial event."""
        return np.cumsum(k40_pair_rate_hz(self.dom_pmt_pairs[2]))

    def pmt_rows(self, dom_id: np.ndarray, channel_id: np.ndarray) -> np.ndarray:
        """Rows in the PMT table of the PMTs (dom_id, channel_id), e.g. of raw hits; a PMT the detector does not
        have is a ConfigError ("PMT dom_id=... channel_id=... that detector ... does not have": callers put the
        key that names the source in front)."""
        lookup = {(int(d), int(c)): i for i, (d, c) in enumerate(zip(self.dom_id, self.channel_id, strict=True))}
        rows = np.array([lookup.get((int(d), int(c)), -1) for d, c in zip(dom_id, channel_id, strict=True)],
                        dtype=np.int64)
        if np.any(rows < 0):
            bad = int(np.flatnonzero(rows < 0)[0])
            raise ConfigError(f"PMT dom_id={int(dom_id[bad])} channel_id={int(channel_id[bad])} that detector "
                              f"{self.name} does not have")
        return rows

    def bounding_cylinder_m(self) -> tuple[np.ndarray, float, float, float]:
        """(axis centre xy, radius, z_min, z_max) of the instrumented volume."""
        xy = self.pmt_pos_m[:, :2]
        centre_xy = xy.mean(axis=0)
        radius = float(np.max(np.linalg.norm(xy - centre_xy, axis=1)))
        return centre_xy, radius, float(self.pmt_pos_m[:, 2].min()), float(self.pmt_pos_m[:, 2].max())


def dom_pmt_directions() -> np.ndarray:
    """The 31 unit pointing directions of a KM3NeT DOM, channel order ring by ring from the top."""
    dirs = []
    for zenith_deg, n, offset_deg in DOM_PMT_RINGS_DEG:
        zenith = np.radians(zenith_deg)
        for k in range(n):
            azimuth = np.radians(offset_deg + 360.0 * k / n)
            dirs.append((np.sin(zenith) * np.cos(azimuth), np.sin(zenith) * np.sin(azimuth), np.cos(zenith)))
    return np.asarray(dirs)


def generate_orca_like(n_du: int = 115, du_spacing_m: float = 20.0, n_doms_per_du: int = 18,
                       dom_spacing_m: float = 9.0, first_dom_height_m: float = 40.0) -> Detector:
    """ORCA-like detector: DUs on a triangular lattice (the ORCA footprint), closest n_du to the centre.

    ORCA: 115 DUs about 20 m apart (PHYSICS.md: assumption for the horizontal spacing; the ORCA detx files
    in km3net-testdata have 19.5-24 m nearest-neighbour distances), 18 DOMs per DU 9 m apart, 31 PMTs per DOM.
    """
    check_positive("data.detector.n_du", n_du, integer=True)
    check_positive("data.detector.n_doms_per_du", n_doms_per_du, integer=True)
    check_positive("data.detector.du_spacing_m", du_spacing_m)
    check_positive("data.detector.dom_spacing_m", dom_spacing_m)
    side = int(np.ceil(np.sqrt(n_du))) + 2
    i, j = np.meshgrid(np.arange(-side, side + 1), np.arange(-side, side + 1), indexing="ij")
    lattice = np.stack([i + 0.5 * j, j * np.sqrt(3) / 2], axis=-1).reshape(-1, 2) * du_spacing_m
    # Sort by radius, then angle, so the n_du chosen are deterministic and compact.
    order = np.lexsort((np.arctan2(lattice[:, 1], lattice[:, 0]), np.round(np.linalg.norm(lattice, axis=1), 6)))
    du_xy = lattice[order[:n_du]]
    pmt_dirs = dom_pmt_directions()
    n_per_dom = len(pmt_dirs)
    pos, dirs, dom, du, channel = [], [], [], [], []
    for du_index, (x, y) in enumerate(du_xy, start=1):
        for floor in range(1, n_doms_per_du + 1):
            dom_centre = np.array([x, y, first_dom_height_m + (floor - 1) * dom_spacing_m])
            pos.append(dom_centre + DOM_PMT_RADIUS_M * pmt_dirs)
            dirs.append(pmt_dirs)
            dom.append(np.full(n_per_dom, du_index * 100 + floor))
            du.append(np.full(n_per_dom, du_index))
            channel.append(np.arange(n_per_dom))
    return Detector(np.concatenate(pos), np.concatenate(dirs), np.concatenate(dom), np.concatenate(du),
                    np.concatenate(channel), det_id=-1, name=f"orca_like_{n_du}du")


def read_detx(path: str | Path) -> Detector:
    """Read a KM3NeT .detx/.datx geometry with km3det; a file that does not parse is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.detector.detx_path={str(path)!r}: no such file")
    try:
        import km3det
    except ImportError:
        raise ConfigError("data.detector.detx_path needs km3det: pip install 'numl[km3net]'") from None
    try:
        detector = km3det.Detector(str(path))
        pmts = detector.pmts
        modules = detector.modules
    except Exception as err:  # km3det raises bare Exception / ValueError / IndexError on malformed files
        raise ConfigError(f"data.detector.detx_path={str(path)!r}: not a valid KM3NeT detector file "
                          f"({type(err).__name__}: {err})") from None
    if len(pmts) == 0:
        raise ConfigError(f"data.detector.detx_path={str(path)!r}: the file describes no PMTs")
    du_of_module = dict(zip(modules["module_id"].tolist(), modules["du"].tolist(), strict=True))
    pos = np.stack([pmts["pos_x"], pmts["pos_y"], pmts["pos_z"]], axis=1).astype(np.float64)
    dirs = np.stack([pmts["dir_x"], pmts["dir_y"], pmts["dir_z"]], axis=1).astype(np.float64)
    norm = np.linalg.norm(dirs, axis=1)
    if not np.all(np.isfinite(pos)) or np.any(np.abs(norm - 1.0) > 1e-2):
        raise ConfigError(f"data.detector.detx_path={str(path)!r}: PMT positions or directions are not finite unit "
                          "vectors")
    dom_id = pmts["module_id"].astype(np.int64)
    return Detector(pos, dirs / norm[:, None], dom_id, np.array([du_of_module[m] for m in dom_id], dtype=np.int64),
                    pmts["channel_id"].astype(np.int64), det_id=int(detector.detid), name=path.name)


def resolve_testdata_path(name_or_path: str, folder: str, config_key: str) -> Path:
    """A path on disk, or a file name inside km3net-testdata's `folder` (detx/, offline/, ...); otherwise a
    ConfigError naming `config_key`."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    try:
        import km3net_testdata
    except ImportError:
        raise ConfigError(f"{config_key}={name_or_path!r}: not a file, and km3net-testdata is not installed "
                          "(pip install 'numl[km3net]')") from None
    try:  # data_path raises RuntimeError for a name it does not ship
        candidate = Path(km3net_testdata.data_path(f"{folder}/{name_or_path}"))
    except RuntimeError:
        candidate = None
    if candidate is None or not candidate.is_file():
        raise ConfigError(f"{config_key}={name_or_path!r}: neither a file nor in km3net-testdata {folder}/")
    return candidate


def build_detector(geometry: str = "generated", detx_path: str | None = None, n_du: int = 115,
                   du_spacing_m: float = 20.0, n_doms_per_du: int = 18, dom_spacing_m: float = 9.0,
                   first_dom_height_m: float = 40.0) -> Detector:
    """Detector from the `data.detector` config node."""
    if geometry == "generated":
        return generate_orca_like(n_du, du_spacing_m, n_doms_per_du, dom_spacing_m, first_dom_height_m)
    if geometry == "detx":
        if not detx_path:
            raise ConfigError("data.detector.detx_path: required when data.detector.geometry=detx")
        return read_detx(resolve_testdata_path(detx_path, "detx", "data.detector.detx_path"))
    raise ConfigError(f"data.detector.geometry={geometry!r}: must be one of generated, detx")


@dataclass(frozen=True)
class RecalibrationReport:
    """How `recalibrate` placed each PMT (counts) and how well the per-DOM rigid model fits the given PMTs."""

    n_pmts: int
    n_given: int  # PMTs whose position and direction were given (e.g. carried by a file's hits)
    n_rigid: int  # other PMTs of DOMs with given PMTs: moved and turned with their DOM
    n_du_shifted: int  # PMTs of DOMs with no given PMT: shifted along their DU's offset-vs-height line
    n_unchanged: int  # PMTs of DUs with no given PMT: as in the original geometry
    rigid_max_pos_residual_m: float  # the rigid DOM model on the given PMTs (what the moved PMTs are good to)
    rigid_max_dir_residual_deg: float

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum |R a_i - b_i|^2 (Kabsch) for unit vectors a, b of shape (n, 3); the identity if
    the a_i do not span a plane."""
    if len(a) < 2 or np.linalg.matrix_rank(a, tol=1e-3) < 2:
        return np.eye(3)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def recalibrate(detector: Detector, dom_id: np.ndarray, channel_id: np.ndarray, pos_m: np.ndarray,
                dirs: np.ndarray, name: str) -> tuple[Detector, RecalibrationReport]:
    """The detector with the given PMTs at the given positions and directions (those a file's hits carry), and
    the others placed consistently, so that simulation on it matches the file:

    - a PMT of a DOM with given PMTs moves with its DOM, a rotation about the DOM centre fitted to the given PMTs'
      directions (Kabsch) and the mean translation of the given PMTs;
    - a DOM without given PMTs is shifted by a straight-line fit, along its DU, of the other DOMs' translations
      against height (a DU's DOMs shift by an offset growing with height: the string's stretch);
    - a DU without given PMTs is left as it is.
    A given PMT the detector does not have is a ConfigError (the caller's key names the source)."""
    rows = detector.pmt_rows(dom_id, channel_id)
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    new_pos, new_dir = detector.pmt_pos_m.copy(), detector.pmt_dir.copy()
    given = np.zeros(detector.n_pmts, dtype=bool)
    given[rows] = True
    doms = np.unique(detector.dom_id)
    shift = {}  # DOM id -> translation of its centre, for DOMs with given PMTs
    n_rigid = 0
    pos_residual, dir_residual = [0.0], [0.0]
    for dom in np.unique(detector.dom_id[rows]):
        in_dom = np.flatnonzero(detector.dom_id == dom)
        sel = np.flatnonzero(detector.dom_id[rows] == dom)  # this DOM's given PMTs
        k = np.searchsorted(in_dom, rows[sel])  # and their places among the DOM's PMTs
        centre = detector.pmt_pos_m[in_dom].mean(axis=0)
        rot = _rotation_between(detector.pmt_dir[rows[sel]], dirs[sel])
        moved = (detector.pmt_pos_m[in_dom] - centre) @ rot.T + centre
        t = (pos_m[sel] - moved[k]).mean(axis=0)
        shift[int(dom)] = t
        model_pos, model_dir = moved + t, detector.pmt_dir[in_dom] @ rot.T
        pos_residual.append(float(np.linalg.norm(model_pos[k] - pos_m[sel], axis=1).max()))
        dir_residual.append(float(np.degrees(np.arccos(np.clip((model_dir[k] * dirs[sel]).sum(1), -1, 1))).max()))
        others = ~given[in_dom]
        new_pos[in_dom[others]], new_dir[in_dom[others]] = model_pos[others], model_dir[others]
        n_rigid += int(others.sum())
    new_pos[rows], new_dir[rows] = pos_m, dirs
    n_du_shifted = n_unchanged = 0
    dom_z = {int(d): float(detector.pmt_pos_m[detector.dom_id == d, 2].mean()) for d in doms}
    dom_du = dict(zip(detector.dom_id.tolist(), detector.du_id.tolist(), strict=False))
    for dom in doms:
        if int(dom) in shift:
            continue
        in_dom = detector.dom_id == dom
        known = [d for d in shift if dom_du[d] == dom_du[int(dom)]]
        if not known:
            n_unchanged += int(in_dom.sum())
            continue
        z = np.array([dom_z[d] for d in known])
        t = np.array([shift[d] for d in known])
        if len(known) >= 2 and np.ptp(z) > 0:
            coef = np.polyfit(z, t, 1)  # (2, 3): slope and intercept per axis
            t_dom = coef[0] * dom_z[int(dom)] + coef[1]
        else:
            t_dom = t.mean(axis=0)
        new_pos[in_dom] += t_dom
        n_du_shifted += int(in_dom.sum())
    report = RecalibrationReport(detector.n_pmts, len(rows), n_rigid, n_du_shifted, n_unchanged,
                                 max(pos_residual), max(dir_residual))
    return Detector(new_pos, new_dir, detector.dom_id, detector.du_id, detector.channel_id, detector.det_id,
                    name), report
