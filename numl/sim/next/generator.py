"""Toy Monte Carlo of 0vbb signal and single-electron background events in high-pressure xenon gas.

The stepping follows Renner et al. (jerenner/dnntoy toyMC/trackgen.py): fixed energy steps, step length
dE / (rho S(E)), a Highland scattering kick after each step. Electrons of one batch are stepped together
(vectorised over events); the step lengths depend only on energy and so are shared by all electrons.
Hard bremsstrahlung photons are emitted from the radiative part of the stopping power and absorbed a
few cm away: they make the satellite deposits labelled "other". Ionisation charge is drifted to the
anode at z = 0 with Gaussian diffusion, voxelised and thresholded; the event energy is smeared with the
detector resolution. A simulator is a pure function of (config, seed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree

from numl.sim.next import photons, physics, response
from numl.sim.next.photons import isotropic as _isotropic
from numl.sim.next.photons import perpendicular_basis as _perpendicular_basis
from numl.utils.errors import ConfigError, check_choice, check_keys, check_positive, check_range
from numl.utils.progress import progress as progress_of

SIMULATOR_NAME = "numl.sim.next"
#: Electron transport models (data.sim.transport). "condensed": an electron that emits a hard bremsstrahlung
#: photon of energy k continues with its energy reduced by k (its path is the range of what it has left,
#: no gap along the track), deposits follow the restricted stopping power of its actual energy, and the
#: scattering is an additive Gaussian walk that equals Highland's theta0 at x/X0 = scattering_scale_x0
#: (issue 15, first part); by default it adds energy-loss straggling and Moller delta rays followed as their own
#: tracks (second part: data.sim.straggling, data.sim.delta_cut_kev). "renner2017": the former toy (dnntoy): the
#: electron keeps its full CSDA path, photon energy is cut out of its deposits (gaps), Highland applied per
#: 2.5 keV step (too little scattering).
TRANSPORTS = ("condensed", "renner2017")
#: Photon transport (data.sim.photon_transport). "xcom": photons (bremsstrahlung, xenon K X-rays, annihilation
#: photons, background gammas) are followed through photoelectric absorption, Compton scattering and pair
#: production with XCOM cross sections (numl.sim.next.photons), the electrons they set moving transported like
#: the primaries. "first_interaction": the former treatment, a bremsstrahlung photon deposits all its energy at
#: one point an exponential distance away (approximate attenuation table physics.PHOTON_ATTENUATION_XENON).
PHOTON_TRANSPORTS = ("xcom", "first_interaction")
#: Background gamma lines entering the active volume (data.sim.background), keV: 208Tl 2614.511 (from 208Pb's
#: 3- -> 0+ transition, NNDC ENSDF), 214Bi 2447.69 (214Po level, NNDC ENSDF). "mixed": each gamma is 208Tl or
#: 214Bi with probability 1/2 at the active volume's surface (an assumption, not a measured ratio: the ROI rates
#: then follow from each line's own acceptance). "electron": a bare electron of Q_bb at a vertex in the fiducial
#: box, the background before the gammas (with photon_transport=first_interaction veto_margin_mm=null, the
#: numbers made before them, bit for bit).
BACKGROUND_LINES_KEV = {"tl208": (2614.511,), "bi214": (2447.69,), "mixed": (2614.511, 2447.69)}
BACKGROUNDS = ("mixed", "tl208", "bi214", "electron")
#: Event samples (data.sim.sample). "bb0nu": 0vbb signal (two electrons sharing Q_bb) against the gamma background
#: of data.sim.background in energy_roi_kev. "tl208_double_escape": NEXT-White's topology calibration on data
#: (Ferrario et al. 2019, arXiv:1905.13141; Kekic et al. 2021, arXiv:2009.10783): 2614.511 keV 208Tl gammas (its
#: 228Th calibration source) entering the detector, events kept around the double-escape peak; signal-like are
#: the events in which the gamma converted into an e+e- pair (two tracks from one vertex, two blobs; at the peak
#: both annihilation photons left the detector), background-like all others (Compton electrons, photoelectrons
#: and multi-site events of the same energy). Labels are the simulation's truth, as NEXT's MC; data.sim.background
#: and the 0vbb kinematics are unused.
SAMPLES = ("bb0nu", "tl208_double_escape")
#: 208Tl double-escape peak: 2614.511 - 2 x 510.999 keV
DOUBLE_ESCAPE_KEV = 2614.511 - 2 * 510.999
#: background gammas drawn per batch for each `events_per_batch` slot: few gammas land in the ROI (a few per
#: thousand entering), and most are dropped after their photon stage, which is cheap; the electrons of the rest
#: are stepped together (the stepping loop costs per step, nearly whatever the number of electrons)
GAMMAS_PER_SLOT = 64
#: an event is dropped before its electrons are transported when its deposited energy is sure to end outside
#: the ROI by more than this many standard deviations of the energy resolution
ROI_PRUNE_SIGMAS = 6.0
#: Per-voxel segmentation classes, as the NEXT sparse-CNN segmentation work labels voxels.
SEGMENT_CLASSES = ("track", "blob", "other")
#: data.sim.detector_response and data.sim.deconvolution (numl.sim.next.response)
DETECTOR_RESPONSES = ("ideal", "sensors")
DECONVOLUTIONS = ("none", "richardson_lucy")
DECONVOLUTION_DEVICES = ("cpu", "cuda")
TRACK, BLOB, OTHER = range(3)


@dataclass(frozen=True)
class NextSimConfig:
    """Detector and physics parameters. Units are in the names; defaults from PHYSICS.md (NEXT)."""

    q_bb_kev: float = 2457.83
    pressure_bar: float = 15.0
    temperature_k: float = 293.0
    step_kev: float = 2.5
    radiation_length_mm_bar: float = 15300.0
    #: electron transport model, one of TRANSPORTS; "renner2017" rebuilds the numbers made before issue 15
    transport: str = "condensed"
    #: "condensed" transport: x/X0 at which the scattering walk equals Highland (PDG 2024 eq. 34.15). 0.02
    #: (20 mm at 15 bar) is the log-middle of the scales the topology sees (2 mm voxels to the 210 mm
    #: track, x/X0 2e-3 .. 0.2), over which the walk stays within Highland's own 11 %.
    scattering_scale_x0: float = 0.02
    #: "condensed" transport: the energy lost in each step fluctuates around the restricted mean (a Gamma
    #: distribution with the mean and the Bohr variance for transfers up to delta_cut_kev, or T/2 without delta
    #: rays; Geant4 PRM, G4UniversalFluctuation's Gaussian-regime variance). false: every step loses its mean.
    straggling: bool = True
    #: "condensed" transport: Moller delta rays above this kinetic energy (keV) are produced (Geant4 PRM,
    #: G4MollerBhabhaModel) and followed as electrons; below it the loss is continuous (restricted stopping
    #: power). null: no delta rays (the loss is the full collision stopping power). 10 keV: a delta of 10 keV
    #: goes ~0.5 mm at 15 bar, well inside a 2 mm voxel. straggling=false delta_cut_kev=null reproduce the first
    #: part of issue 15 (2026-12-02, commit d913ab1) bit for bit; renner2017 ignores both.
    delta_cut_kev: float | None = 10.0
    #: detector box (x, y, drift z) in mm; the anode is the plane z = 0.  NEXT-White is 454 mm x 530 mm.
    detector_size_mm: tuple[float, float, float] = (440.0, 440.0, 520.0)
    #: vertices are uniform in the box shrunk by this margin, so electron tracks stay inside.
    fiducial_margin_mm: float = 150.0
    transverse_diffusion_mm_per_sqrt_cm: float = 1.20
    longitudinal_diffusion_mm_per_sqrt_cm: float = 0.30
    #: energy carried by one diffused charge packet (the toy's stand-in for single ionisation electrons)
    packet_energy_kev: float = 0.625
    energy_resolution_fwhm: float = 0.01
    voxel_size_mm: float = 10.0
    energy_threshold_kev: float = 10.0
    #: per-voxel label "blob": the last blob_energy_kev of each primary electron
    blob_energy_kev: float = 400.0
    #: bremsstrahlung photons above this energy are tracked; softer radiation is absorbed locally
    photon_cut_kev: float = 40.0
    #: side of the cube (in voxels) around the event centroid that the networks see
    window_voxels: int = 32
    #: event selection on the smeared energy, as the NEXT analyses cut on the Q_bb region before the
    #: topology cut; events that lost a bremsstrahlung photon fall out. None keeps every event.
    energy_roi_kev: tuple[float, float] | None = (2400.0, 2520.0)
    #: background class, one of BACKGROUNDS: gammas of 208Tl / 214Bi entering the detector (isotropic flux on the
    #: box surface: uniform over its area, cosine-weighted inward directions), or "electron" (the former one)
    background: str = "mixed"
    #: photon transport, one of PHOTON_TRANSPORTS
    photon_transport: str = "xcom"
    #: fiducial veto: events with any energy deposited within this distance (mm) of the detector's surface are
    #: rejected, as NEXT-White's fiducial cut (Ferrario et al. 2019, arXiv:1905.13141: r < 178 mm of the
    #: 198 mm active radius and 20 mm from each end: about 20 mm). null: no veto (the former selection).
    veto_margin_mm: float | None = 20.0
    #: detector response, one of DETECTOR_RESPONSES. "ideal": charge packets diffused and voxelised, one Gaussian
    #: energy smearing (energy_resolution_fwhm), the numbers made before the sensor response, bit for bit.
    #: "sensors": numl.sim.next.response (ionisation with Fano, attachment, EL light on PMTs and SiPMs per time
    #: slice, hits from the sensors); energy_resolution_fwhm and packet_energy_kev are then unused.
    detector_response: str = "ideal"
    #: sensors: mean energy per ionisation electron in xenon gas (eV). 22.4 eV as IC's detector simulation
    #: (next-exp/IC detsim.conf, wi); measured 21.9 +- 0.6 eV in high-pressure xenon gas (Bolotnikov & Ramsey
    #: 1997, NIM A 396, 360). 24.8 eV, written once in the study README, is not a xenon-gas ionisation W.
    ionisation_energy_ev: float = 22.4
    #: sensors: Fano factor of xenon gas, 0.15 (IC detsim.conf; Bolotnikov & Ramsey 1997: 0.13-0.17 below
    #: 0.55 g/cm^3)
    fano_factor: float = 0.15
    #: sensors: electron drift velocity, 1.0 mm/us (IC detsim.conf; NEXT-White measured 0.91-0.93 mm/us at 7-9 bar,
    #: Simon et al. 2018, arXiv:1804.01680)
    drift_velocity_mm_per_us: float = 1.0
    #: sensors: electron lifetime against attachment, 12 ms (IC detsim.conf; NEXT-White ran at 2-12 ms,
    #: Martinez-Lema et al. 2018, arXiv:1804.01780); the reconstruction corrects it exactly (a perfect Kr map)
    electron_lifetime_ms: float = 12.0
    #: sensors: photoelectrons the energy plane (PMTs) collects per ionisation electron (Poisson). Assumption:
    #: 5 pe/e, so that 41.5 keV Kr gives ~10^4 pe as in NEXT-White's S2 (Martinez-Lema et al. 2018).
    energy_plane_pe_per_electron: float = 5.0
    #: sensors: relative sigma of the energy scale left after the calibration, one Gaussian factor per event
    #: (position-dependent map residuals, not statistics): the free parameter, set so that the full chain gives
    #: 1.0 % FWHM at 2615 keV, NEXT-White's measurement (Renner et al. 2019, arXiv:1905.13110)
    energy_calibration_residual: float = 0.0038
    #: sensors: EL photons per electron crossing the gap, 365 (IC detsim.conf el_gain, NEXT-White)
    el_photons_per_electron: float = 365.0
    #: sensors: EL gap 6 mm (NEXT-White, Monrabal et al. 2018, arXiv:1804.02409); distance from the SiPM plane to
    #: the gap's near side (assumption: 5 mm, window and anode plate)
    el_gap_mm: float = 6.0
    sipm_plane_distance_mm: float = 5.0
    #: sensors: SiPM pitch, 10 mm (NEXT-White) or 15.55 mm (NEXT-100); sensors 1 mm^2 (NEXT-White SensL C-series)
    #: with photon detection efficiency 0.4 (assumption, SensL datasheet range at 420 nm after the TPB shifter)
    sipm_pitch_mm: float = 10.0
    sipm_size_mm: float = 1.0
    sipm_detection_efficiency: float = 0.4
    #: sensors: SiPM charge threshold per slice for a hit, 6 pe (IC beersheba.conf threshold)
    sipm_threshold_pe: float = 6.0
    #: sensors without deconvolution: the topology hits keep only SiPMs of at least this charge per slice; the
    #: energy of the others goes to the hits above it in the same slice, or to the nearest slice with such hits.
    #: 30 pe is the default threshold_charge_high (same_peak=True) of IC's esmeralda, NEXT's topology city (the
    #: thresholds of Ferrario et al. 2019 and Kekic et al. 2021 themselves were not readable here); null: every hit
    #: above sipm_threshold_pe (numl before 2026-12-07). The deconvolution reads the sipm_threshold_pe hits, as
    #: beersheba does.
    sipm_topology_threshold_pe: float | None = 30.0
    #: sensors: time slice of the SiPM readout for the hits, 2 us (IC penthesilea's rebinning of 1 us samples)
    time_slice_us: float = 2.0
    #: sensors: "none": hits voxelised as they are; "richardson_lucy": hits deconvolved onto the voxel grid
    #: (Simon et al. 2021, arXiv:2102.11931; IC beersheba) with deconvolution_iterations iterations, cells
    #: below deconvolution_cut of the maximum dropped (beersheba e_cut 1e-3 .. 1e-2)
    deconvolution: str = "none"
    deconvolution_iterations: int = 75
    deconvolution_cut: float = 0.01
    #: None: always deconvolution_iterations iterations (the default, as the study's data); a number: stop once the
    #: estimate changes by less than this in an iteration (relative L1; IC beersheba's iter_thr is the same idea),
    #: a one-line error if it does not within the iterations
    deconvolution_tolerance: float | None = None
    #: "all": the deconvolved image keeps every time slice (slices no thicker than voxel_size_mm are summed into
    #: voxels after the deconvolution, as IC's beersheba deconvolves every slice before voxelising); "layer_centre":
    #: the former default, which read only the slice at each voxel layer's centre (one in five at 10 mm), a defect
    #: kept to rebuild the tables made with it (numl.sim.next.response.richardson_lucy_voxels)
    deconvolution_slices: str = "all"
    #: "cpu" or "cuda": where the Richardson-Lucy iteration runs (numl.sim.next.response.richardson_lucy)
    deconvolution_device: str = "cpu"
    #: "float64" (the default, as the study's 10 mm data) or "float32": at 2 mm 1.8-2.6x faster on a CPU (larger
    #: boxes gain more), the cells within 7e-6 of the maximum of float64's (experiments/next_topology/results/
    #: deconvolution_speed.md and the study README's "Detector response")
    deconvolution_precision: str = "float64"
    #: event sample, one of SAMPLES
    sample: str = "bb0nu"
    signal_fraction: float = 0.5
    events_per_batch: int = 256
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in ("q_bb_kev", "pressure_bar", "temperature_k", "step_kev", "radiation_length_mm_bar",
                    "packet_energy_kev", "voxel_size_mm", "blob_energy_kev", "photon_cut_kev",
                    "scattering_scale_x0"):
            check_positive(f"data.sim.{key}", getattr(self, key))
        check_choice("data.sim.transport", self.transport, TRANSPORTS)
        check_choice("data.sim.background", self.background, BACKGROUNDS)
        check_choice("data.sim.sample", self.sample, SAMPLES)
        check_choice("data.sim.photon_transport", self.photon_transport, PHOTON_TRANSPORTS)
        check_choice("data.sim.detector_response", self.detector_response, DETECTOR_RESPONSES)
        check_choice("data.sim.deconvolution", self.deconvolution, DECONVOLUTIONS)
        for key in ("ionisation_energy_ev", "drift_velocity_mm_per_us", "electron_lifetime_ms",
                    "energy_plane_pe_per_electron", "el_photons_per_electron", "el_gap_mm", "sipm_pitch_mm",
                    "sipm_size_mm", "sipm_detection_efficiency", "time_slice_us"):
            check_positive(f"data.sim.{key}", getattr(self, key))
        for key in ("fano_factor", "energy_calibration_residual", "sipm_plane_distance_mm", "sipm_threshold_pe"):
            check_positive(f"data.sim.{key}", getattr(self, key), allow_zero=True)
        if self.sipm_topology_threshold_pe is not None:
            check_positive("data.sim.sipm_topology_threshold_pe", self.sipm_topology_threshold_pe, allow_zero=True)
        check_range("data.sim.sipm_detection_efficiency", self.sipm_detection_efficiency, 0.0, 1.0)
        check_positive("data.sim.deconvolution_iterations", self.deconvolution_iterations, integer=True)
        check_range("data.sim.deconvolution_cut", self.deconvolution_cut, 0.0, 1.0)
        if self.deconvolution_tolerance is not None:
            check_positive("data.sim.deconvolution_tolerance", self.deconvolution_tolerance)
        check_choice("data.sim.deconvolution_device", self.deconvolution_device, DECONVOLUTION_DEVICES)
        check_choice("data.sim.deconvolution_precision", self.deconvolution_precision, ("float64", "float32"))
        check_choice("data.sim.deconvolution_slices", self.deconvolution_slices, ("all", "layer_centre"))
        if self.deconvolution != "none" and self.deconvolution_device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("data.sim.deconvolution_device='cuda': no CUDA device is visible here; use 'cpu'")
        if self.deconvolution != "none" and self.detector_response != "sensors":
            raise ConfigError(f"data.sim.deconvolution={self.deconvolution!r}: deconvolves sensor hits, needs "
                              "data.sim.detector_response=sensors")
        if self.sample == "tl208_double_escape" and self.photon_transport != "xcom":
            raise ConfigError(f"data.sim.photon_transport={self.photon_transport!r}: the double-escape sample "
                              "(data.sim.sample=tl208_double_escape) needs photon_transport=xcom")
        if self.background != "electron" and self.photon_transport != "xcom":
            raise ConfigError(f"data.sim.photon_transport={self.photon_transport!r}: background gammas "
                              f"(data.sim.background={self.background!r}) need photon_transport=xcom")
        if self.veto_margin_mm is not None:
            check_positive("data.sim.veto_margin_mm", self.veto_margin_mm, allow_zero=True)
        if not isinstance(self.straggling, bool):
            raise ConfigError(f"data.sim.straggling={self.straggling!r}: must be true or false")
        if self.delta_cut_kev is not None:
            check_positive("data.sim.delta_cut_kev", self.delta_cut_kev)
        for key in ("transverse_diffusion_mm_per_sqrt_cm", "longitudinal_diffusion_mm_per_sqrt_cm",
                    "energy_resolution_fwhm", "energy_threshold_kev", "fiducial_margin_mm"):
            check_positive(f"data.sim.{key}", getattr(self, key), allow_zero=True)
        check_positive("data.sim.window_voxels", self.window_voxels, integer=True)
        check_positive("data.sim.events_per_batch", self.events_per_batch, integer=True)
        check_range("data.sim.signal_fraction", self.signal_fraction, 0.0, 1.0)
        if self.energy_roi_kev is not None and not (len(self.energy_roi_kev) == 2
                                                    and 0 <= self.energy_roi_kev[0] < self.energy_roi_kev[1]):
            raise ConfigError(f"data.sim.energy_roi_kev={list(self.energy_roi_kev)}: must be null or [low, high] keV "
                              "with 0 <= low < high")
        if self.energy_roi_kev is not None and self.sample == "tl208_double_escape":
            if not self.energy_roi_kev[0] <= DOUBLE_ESCAPE_KEV <= self.energy_roi_kev[1]:
                raise ConfigError(f"data.sim.energy_roi_kev={list(self.energy_roi_kev)}: must contain the 208Tl "
                                  f"double-escape peak ({DOUBLE_ESCAPE_KEV:.1f} keV) for "
                                  "data.sim.sample=tl208_double_escape")
        elif self.energy_roi_kev is not None:
            highest = {"signal": self.q_bb_kev, f"background {self.background}": self.background_max_kev}
            for name, top in highest.items():
                # the resolution's 5 sigma above the highest energy deposited: no event can land above that
                reach = top * (1 + 5 * self.energy_resolution_fwhm / 2.3548 * np.sqrt(self.q_bb_kev / top))
                if self.energy_roi_kev[0] >= reach:
                    raise ConfigError(f"data.sim.energy_roi_kev={list(self.energy_roi_kev)}: lower edge above every "
                                      f"energy the {name} deposits (at most {top:.1f} keV + 5 sigma = {reach:.1f} keV)")
            # signal events outside the Q_bb peak (bremsstrahlung escapes only) are too rare to fill a sample
            floor = self.q_bb_kev * (1 - 5 * self.energy_resolution_fwhm / 2.3548)
            if self.signal_fraction > 0 and self.energy_roi_kev[1] < floor:
                raise ConfigError(f"data.sim.energy_roi_kev={list(self.energy_roi_kev)}: upper edge below the signal "
                                  f"peak (Q_bb - 5 sigma = {floor:.1f} keV); use data.sim.signal_fraction=0 for a "
                                  "background-only sample")
        if len(self.detector_size_mm) != 3:
            raise ConfigError(f"data.sim.detector_size_mm={list(self.detector_size_mm)}: "
                              "must be three lengths (x, y, z)")
        for axis, size in zip("xyz", self.detector_size_mm, strict=True):
            check_positive(f"data.sim.detector_size_mm.{axis}", size)
            n_voxels = size / self.voxel_size_mm
            if abs(n_voxels - round(n_voxels)) > 1e-6:
                raise ConfigError(
                    f"data.sim.voxel_size_mm={self.voxel_size_mm}: does not divide the detector "
                    f"{axis} size {size} mm; choose a divisor of {list(self.detector_size_mm)}"
                )
            if 2 * self.fiducial_margin_mm >= size:
                raise ConfigError(f"data.sim.fiducial_margin_mm={self.fiducial_margin_mm}: leaves no fiducial "
                                  f"volume along {axis} (size {size} mm)")

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(round(s / self.voxel_size_mm)) for s in self.detector_size_mm)

    @property
    def background_max_kev(self) -> float:
        """The highest energy a background event deposits (its gamma line, or Q_bb for the electron)."""
        if self.sample == "tl208_double_escape":
            return BACKGROUND_LINES_KEV["tl208"][0]
        return max(BACKGROUND_LINES_KEV.get(self.background, (self.q_bb_kev,)))

    @property
    def class_names(self) -> tuple[str, str]:
        return class_names(self.sample, self.background)

    @property
    def density_g_cm3(self) -> float:
        return physics.xenon_density_g_cm3(self.pressure_bar, self.temperature_k)

    @property
    def radiation_length_mm(self) -> float:
        return self.radiation_length_mm_bar / self.pressure_bar

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("extra")
        out["detector_size_mm"] = list(self.detector_size_mm)
        out["energy_roi_kev"] = None if self.energy_roi_kev is None else list(self.energy_roi_kev)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> NextSimConfig:
        check_keys("data.sim", values, {f.name for f in dataclasses.fields(cls)} - {"extra"})
        values = dict(values)
        for key in ("detector_size_mm", "energy_roi_kev"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def class_names(sample: str, background: str) -> tuple[str, str]:
    """What label 0 and label 1 are (data.sim.sample and data.sim.background), for figures and tables."""
    if sample == "tl208_double_escape":
        return "non-pair events", "e+e- pair"
    return ("single-electron background" if background == "electron" else "gamma background"), "0vbb signal"


@dataclass
class NextEvent:
    """One voxelised event. Voxel indices are global detector indices (x, y, z)."""

    label: int  # 1 = 0vbb signal (two electrons), 0 = background (one electron)
    voxel_index: np.ndarray  # (n, 3) int32
    voxel_energy_kev: np.ndarray  # (n,) float32, after smearing and threshold
    voxel_segment: np.ndarray  # (n,) int8, SEGMENT_CLASSES
    energy_kev: float  # smeared total energy of the voxels
    vertex_mm: np.ndarray  # (3,)
    track_ends_mm: np.ndarray  # (2, 3): the two electrons' ends (signal) or start and end (background)
    path_length_mm: float  # summed step lengths of all primary electrons
    deposited_kev: float  # energy deposited inside the detector before diffusion and smearing
    escaped_kev: float  # photon energy leaving the detector

    def voxel_centres_mm(self, voxel_size_mm: float) -> np.ndarray:
        """(n, 3) positions of the voxel centres in mm (indices count voxels from the detector's corner)."""
        return (self.voxel_index + 0.5) * voxel_size_mm


def _electron_energy_split(rng: np.random.Generator, q_kev: float, n: int) -> np.ndarray:
    """Kinetic energy of the first electron of a 0vbb pair, from the Primakoff-Rosen single-electron spectrum.

    dN/dT1 ~ (T1 + m)^2 (T2 + m)^2 with T2 = Q - T1 (phase space times the Primakoff-Rosen Fermi factor);
    sampled by rejection.
    """
    m = physics.ELECTRON_MASS_MEV * 1e3
    peak = (q_kev / 2 + m) ** 4
    out = np.empty(n)
    filled = 0
    while filled < n:
        t1 = rng.uniform(0, q_kev, 2 * (n - filled) + 8)
        accept = rng.uniform(0, peak, t1.size) < (t1 + m) ** 2 * (q_kev - t1 + m) ** 2
        take = t1[accept][: n - filled]
        out[filled:filled + take.size] = take
        filled += take.size
    return out


def _second_direction(rng: np.random.Generator, first: np.ndarray, beta1: np.ndarray, beta2: np.ndarray) -> np.ndarray:
    """Direction of the second 0vbb electron: angular correlation 1 - beta1 beta2 cos(theta) (mass mechanism)."""
    n = len(first)
    cos_t = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        trial = rng.uniform(-1, 1, todo.size)
        ok = rng.uniform(0, 2, todo.size) < 1 - beta1[todo] * beta2[todo] * trial
        cos_t[todo[ok]] = trial[ok]
        todo = todo[~ok]
    u, v = _perpendicular_basis(first)
    phi = rng.uniform(0, 2 * np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    return cos_t[:, None] * first + sin_t[:, None] * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)


def _beta(kinetic_kev: np.ndarray) -> np.ndarray:
    gamma = 1 + kinetic_kev / (physics.ELECTRON_MASS_MEV * 1e3)
    return np.sqrt(1 - 1 / gamma**2)


def step_table(cfg: NextSimConfig, max_kinetic_kev: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy at the start of each step (counting down from the end of the track), step length in mm,
    and the radiative fraction of the energy lost in that step.

    Index k is the k-th step before the electron stops, so an electron of energy T uses the first
    ceil(T / step) entries, read backwards: its last step (the one that stops it) is the remainder.
    """
    n = int(np.ceil(max_kinetic_kev / cfg.step_kev)) + 1
    energy_kev = np.arange(n) * cfg.step_kev + cfg.step_kev
    lower_kev = energy_kev - cfg.step_kev
    # Exact integral of dE / (rho S) over each step (Simpson on 8 sub-intervals).
    sub = np.linspace(0, 1, 9)[None, :] * cfg.step_kev + lower_kev[:, None]
    inverse = 1 / (cfg.density_g_cm3 * physics.stopping_power_mev_cm2_g(np.maximum(sub, 1.0) / 1e3))
    weights = np.array([1, 4, 2, 4, 2, 4, 2, 4, 1]) / 24.0
    step_mm = (inverse @ weights) * cfg.step_kev / 1e3 * 10.0
    mid_mev = (energy_kev - cfg.step_kev / 2) / 1e3
    radiative_fraction = (physics.stopping_power_mev_cm2_g(mid_mev, column=2)
                          / physics.stopping_power_mev_cm2_g(mid_mev, column=3))
    return energy_kev, step_mm, radiative_fraction


def _transport_electrons(rng: np.random.Generator, cfg: NextSimConfig, start_mm: np.ndarray,
                         direction: np.ndarray, kinetic_kev: np.ndarray) -> dict[str, np.ndarray]:
    """Step all electrons together with the transport model cfg.transport. Returns deposits in step order
    (position, energy, electron id, blob flag), the ends and path lengths of the electrons, and the
    bremsstrahlung photons (origin, energy, electron id)."""
    if cfg.transport == "renner2017":
        return _transport_electrons_renner2017(rng, cfg, start_mm, direction, kinetic_kev)
    if not cfg.straggling and cfg.delta_cut_kev is None:
        return _transport_electrons_condensed(rng, cfg, start_mm, direction, kinetic_kev)
    return transport_condensed_history(rng, cfg, start_mm, direction, kinetic_kev)


def restricted_step_table(cfg: NextSimConfig, max_kinetic_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper energy of each step_kev interval (index k: [k step, (k + 1) step]) and the path in mm over which
    the restricted stopping power (collision + bremsstrahlung below photon_cut_kev) takes the electron
    through it (Simpson on 8 sub-intervals)."""
    n = int(np.ceil(max_kinetic_kev / cfg.step_kev)) + 1
    energy_kev = np.arange(n) * cfg.step_kev + cfg.step_kev
    sub = np.linspace(0, 1, 9)[None, :] * cfg.step_kev + (energy_kev - cfg.step_kev)[:, None]
    stopping = physics.restricted_stopping_power_mev_cm2_g(np.maximum(sub, 1.0) / 1e3, cfg.photon_cut_kev / 1e3)
    weights = np.array([1, 4, 2, 4, 2, 4, 2, 4, 1]) / 24.0
    step_mm = ((1 / (cfg.density_g_cm3 * stopping)) @ weights) * cfg.step_kev / 1e3 * 10.0
    return energy_kev, step_mm


def condensed_scattering_sigma(cfg: NextSimConfig, kinetic_mev: np.ndarray, step_mm: np.ndarray) -> np.ndarray:
    """Plane-projected scattering angle of one step of the "condensed" transport: the additive walk that
    equals Highland at x/X0 = cfg.scattering_scale_x0 (physics.scattering_variance_per_x0)."""
    variance = physics.scattering_variance_per_x0(np.maximum(kinetic_mev, 1e-4), cfg.scattering_scale_x0)
    return np.sqrt(variance * step_mm / cfg.radiation_length_mm)


def scatter(rng: np.random.Generator, direction: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Turn unit vectors by a polar angle whose two projections are Gaussian with width sigma, uniform azimuth."""
    n = len(direction)
    theta = sigma * np.sqrt(rng.standard_normal(n) ** 2 + rng.standard_normal(n) ** 2)
    phi = rng.uniform(0, 2 * np.pi, n)
    u, v = _perpendicular_basis(direction)
    kick = np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v
    new_d = np.cos(theta)[:, None] * direction + np.sin(theta)[:, None] * kick
    return new_d / np.linalg.norm(new_d, axis=1, keepdims=True)


def _transport_electrons_condensed(rng: np.random.Generator, cfg: NextSimConfig, start_mm: np.ndarray,
                                   direction: np.ndarray, kinetic_kev: np.ndarray) -> dict[str, np.ndarray]:
    """Condensed-history stepping (issue 15). Each step takes the electron down to the next multiple of
    step_kev (a full step_kev, or less after a photon left it off the grid) and deposits that energy at the
    step's middle; its length follows the restricted stopping power of the electron's actual energy. A hard
    photon (above photon_cut_kev, 1/k spectrum up to the electron's energy) is emitted at the end of a step
    with probability 1 - exp(-rate dx) and its energy k is taken from the electron, which continues with
    T - k: the track ends sooner and has no gap. Energy is conserved exactly: every keV ends in a deposit or
    a photon. The direction then turns by a Gaussian angle of variance dx/X0 times
    physics.scattering_variance_per_x0 at the step's mean energy."""
    n_el = len(kinetic_kev)
    _, step_tbl = restricted_step_table(cfg, float(kinetic_kev.max()))
    pos = start_mm.astype(np.float64).copy()
    d = direction.astype(np.float64).copy()
    energy = kinetic_kev.astype(np.float64).copy()
    path = np.zeros(n_el)
    k_cut_mev = cfg.photon_cut_kev / 1e3
    dep_pos, dep_e, dep_el, dep_blob = [], [], [], []
    ph_pos, ph_e, ph_el, ph_parent = [], [], [], []
    alive = np.flatnonzero(energy > 0)
    while alive.size:
        e = energy[alive]
        # the grid point below (the electron's energy is on the grid except after a photon)
        cell = np.ceil(e / cfg.step_kev - 1e-9).astype(int) - 1
        lower = np.maximum(cell, 0) * cfg.step_kev
        de = e - lower
        dx = step_tbl[np.clip(cell, 0, len(step_tbl) - 1)] * de / cfg.step_kev
        dd = d[alive]
        dep_pos.append(pos[alive] + 0.5 * dx[:, None] * dd)
        dep_e.append(de)
        dep_el.append(alive)
        dep_blob.append(e - de / 2 < cfg.blob_energy_kev)
        new_pos = pos[alive] + dx[:, None] * dd
        pos[alive] = new_pos
        path[alive] += dx
        e_mid_mev = (e - de / 2) / 1e3
        after = lower
        # hard bremsstrahlung: at most one photon per step (the mean per step is below 1e-3)
        rate = physics.hard_photon_rate_per_mm(e_mid_mev, k_cut_mev, cfg.density_g_cm3)
        emit = (rng.uniform(size=alive.size) < -np.expm1(-rate * dx)) & (after > cfg.photon_cut_kev)
        if emit.any():
            k = cfg.photon_cut_kev * (after[emit] / cfg.photon_cut_kev) ** rng.uniform(size=int(emit.sum()))
            k = np.minimum(k, after[emit])
            after = after.copy()
            after[emit] -= k
            ph_pos.append(new_pos[emit])
            ph_e.append(k)
            ph_el.append(alive[emit])
            ph_parent.append(lower[emit])
        energy[alive] = after
        # multiple scattering over the step, with the energy at its middle
        d[alive] = scatter(rng, dd, condensed_scattering_sigma(cfg, e_mid_mev, dx))
        alive = alive[energy[alive] > 0]

    def cat(chunks, shape, dtype=np.float64):
        return np.concatenate(chunks) if chunks else np.zeros(shape, dtype)

    return {
        "deposit_mm": cat(dep_pos, (0, 3)), "deposit_kev": cat(dep_e, (0,)),
        "deposit_electron": cat(dep_el, (0,), np.int64), "deposit_blob": cat(dep_blob, (0,), bool),
        "end_mm": pos, "path_mm": path,
        "photon_origin_mm": cat(ph_pos, (0, 3)), "photon_kev": cat(ph_e, (0,)),
        "photon_electron": cat(ph_el, (0,), np.int64), "photon_parent_kev": cat(ph_parent, (0,)),
    }


def restricted_range_table(cfg: NextSimConfig, max_kinetic_kev: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies 0, step_kev, 2 step_kev, ... and the range in mm from each down to 0 under the restricted stopping
    power: collision below delta_cut_kev (all of it without delta rays) plus bremsstrahlung below photon_cut_kev
    (Simpson on 8 sub-intervals per step_kev)."""
    n = int(np.ceil(max_kinetic_kev / cfg.step_kev)) + 2
    lower = np.arange(n - 1) * cfg.step_kev
    sub_mev = np.maximum(np.linspace(0, 1, 9)[None, :] * cfg.step_kev + lower[:, None], 1.0) / 1e3
    stopping = physics.restricted_stopping_power_mev_cm2_g(sub_mev, cfg.photon_cut_kev / 1e3)
    if cfg.delta_cut_kev is not None:
        stopping = stopping - physics.moller_loss_above_cut_mev_cm2_g(sub_mev, cfg.delta_cut_kev / 1e3)
    weights = np.array([1, 4, 2, 4, 2, 4, 2, 4, 1]) / 24.0
    step_mm = ((1 / (cfg.density_g_cm3 * stopping)) @ weights) * cfg.step_kev / 1e3 * 10.0
    return np.arange(n) * cfg.step_kev, np.concatenate([[0.0], np.cumsum(step_mm)])


class _Electrons:
    """Growable per-electron state of transport_condensed_history (primaries first, delta rays appended)."""

    def __init__(self, pos, d, energy):
        n = len(energy)
        self.n, self.cap = n, max(2 * n, 64)
        self.pos, self.d = np.zeros((self.cap, 3)), np.zeros((self.cap, 3))
        self.energy, self.path = np.zeros(self.cap), np.zeros(self.cap)
        self.root, self.blob = np.zeros(self.cap, np.int64), np.full(self.cap, -1, np.int8)
        self.generation = np.zeros(self.cap, np.int8)
        self.pos[:n], self.d[:n], self.energy[:n], self.root[:n] = pos, d, energy, np.arange(n)

    def add(self, pos, d, energy, root, blob, generation) -> np.ndarray:
        m = len(energy)
        if self.n + m > self.cap:
            self.cap = 2 * (self.n + m)
            for name in ("pos", "d", "energy", "path", "root", "blob", "generation"):
                old = getattr(self, name)
                new = np.zeros((self.cap,) + old.shape[1:], old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        new = np.arange(self.n, self.n + m)
        self.pos[new], self.d[new], self.energy[new] = pos, d, energy
        self.root[new], self.blob[new], self.generation[new] = root, blob, generation
        self.n += m
        return new


def transport_condensed_history(rng: np.random.Generator, cfg: NextSimConfig, start_mm: np.ndarray,
                                direction: np.ndarray, kinetic_kev: np.ndarray,
                                max_path_mm: float | None = None) -> dict[str, np.ndarray]:
    """Condensed-history stepping with energy-loss straggling and Moller delta rays (issue 15, second part).

    Each step is the path over which the restricted stopping power (collision below delta_cut_kev plus
    bremsstrahlung below photon_cut_kev) would take the electron down by step_kev (the last step: to rest),
    read from the range table. The energy actually lost there (straggling=true) is Gamma-distributed with that
    mean and the Bohr variance for transfers up to min(delta_cut_kev, T/2) (physics.bohr_variance_kev2): never
    negative, skewed to high losses like the Landau-Vavilov shape, and with the exact first two moments. It is
    deposited at the step's middle. A Moller delta ray above delta_cut_kev is produced at the end of the step
    with probability 1 - exp(-n_el sigma_Moller dx) (sigma at the step's mean energy), its energy from the
    Moller cross section, its direction and the primary's new one from two-body kinematics on a free electron
    at rest (momentum conservation); the delta is appended to the electrons and stepped by the same loop (it may
    radiate and make deltas itself); its deposits belong to its primary (deposit_electron) with its generation
    in deposit_generation and the primary's blob label at its birth. Bremsstrahlung as in the first part of
    issue 15, then the Gaussian scattering walk. Energy is conserved exactly: every keV ends in a deposit or a
    photon (or in remaining_kev when a primary is stopped by max_path_mm, the thin-slab mode the tests use)."""
    n_el = len(kinetic_kev)
    energy_grid, range_tbl = restricted_range_table(cfg, float(kinetic_kev.max()))
    el = _Electrons(start_mm.astype(np.float64), direction.astype(np.float64), kinetic_kev.astype(np.float64))
    k_cut_mev = cfg.photon_cut_kev / 1e3
    delta_cut = cfg.delta_cut_kev
    n_electrons = physics.electron_density_per_cm3(cfg.density_g_cm3)
    mass_kev = physics.ELECTRON_MASS_MEV * 1e3
    remaining = np.zeros(n_el)
    if delta_cut is not None:  # delta rays per mm on the range table's energies (smooth; zero up to 2 T_cut)
        grid_mev = np.maximum(energy_grid, 1.0) / 1e3
        moller_per_mm = n_electrons * physics.moller_cross_section_cm2(grid_mev, delta_cut / 1e3) / 10.0
    dep_pos, dep_e, dep_el, dep_blob, dep_gen = [], [], [], [], []
    ph_pos, ph_e, ph_el, ph_parent = [], [], [], []
    de_pos, de_e, de_el, de_parent = [], [], [], []
    alive = np.flatnonzero(el.energy[: el.n] > 0)
    while alive.size:
        e = el.energy[alive]
        nominal = np.minimum(e, cfg.step_kev)
        last = e <= cfg.step_kev
        dx = np.interp(e, energy_grid, range_tbl) - np.interp(e - nominal, energy_grid, range_tbl)
        loss = nominal
        if cfg.straggling:
            full = np.flatnonzero(~last)  # the last step deposits what is left
            if full.size:
                ef, nf = e[full], nominal[full]
                max_transfer = ef / 2 if delta_cut is None else np.minimum(delta_cut, ef / 2)
                variance = physics.bohr_variance_kev2(ef - nf / 2, dx[full], max_transfer, cfg.density_g_cm3)
                loss = nominal.copy()
                loss[full] = np.minimum(rng.gamma(nf**2 / variance, variance / nf), ef)
            # a remnant below 1 eV is deposited with the step (no endless sub-eV steps)
            loss = np.where(e - loss < 1e-3, e, loss)
        after = e - loss
        dd = el.d[alive]
        own_blob = el.blob[alive]
        dep_pos.append(el.pos[alive] + 0.5 * dx[:, None] * dd)
        dep_e.append(loss)
        dep_el.append(el.root[alive])
        dep_blob.append(np.where(own_blob < 0, e - loss / 2 < cfg.blob_energy_kev, own_blob == 1))
        dep_gen.append(el.generation[alive])
        new_pos = el.pos[alive] + dx[:, None] * dd
        el.pos[alive] = new_pos
        el.path[alive] += dx
        e_mid_mev = (e - loss / 2) / 1e3
        born = None
        if delta_cut is not None:
            rate = np.interp(e - loss / 2, energy_grid, moller_per_mm)
            hit = np.flatnonzero((rng.uniform(size=alive.size) < -np.expm1(-rate * dx)) & (after > 2 * delta_cut))
            if hit.size:
                t = after[hit]
                t_delta = physics.sample_moller_fraction(rng, t / 1e3, delta_cut / 1e3) * t
                p0 = np.sqrt(t * (t + 2 * mass_kev))
                p_delta = np.sqrt(t_delta * (t_delta + 2 * mass_kev))
                cos_delta = np.minimum(1.0, np.sqrt(t_delta * (t + 2 * mass_kev) / (t * (t_delta + 2 * mass_kev))))
                u, v = _perpendicular_basis(dd[hit])
                phi = rng.uniform(0, 2 * np.pi, hit.size)
                sin_delta = np.sqrt(1 - cos_delta**2)
                d_delta = cos_delta[:, None] * dd[hit] + sin_delta[:, None] * (
                    np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)
                d_primary = p0[:, None] * dd[hit] - p_delta[:, None] * d_delta
                dd = dd.copy()
                dd[hit] = d_primary / np.linalg.norm(d_primary, axis=1, keepdims=True)
                after = after.copy()
                after[hit] -= t_delta
                parents = alive[hit]
                blob_at_birth = np.where(el.blob[parents] < 0, t < cfg.blob_energy_kev, el.blob[parents] == 1)
                de_pos.append(new_pos[hit])
                de_e.append(t_delta)
                de_el.append(el.root[parents])
                de_parent.append(t)
                born = el.add(new_pos[hit], d_delta, t_delta, el.root[parents], blob_at_birth.astype(np.int8),
                              el.generation[parents] + 1)
        # hard bremsstrahlung: at most one photon per step (the mean per step is below 1e-3)
        rate = physics.hard_photon_rate_per_mm(e_mid_mev, k_cut_mev, cfg.density_g_cm3)
        emit = (rng.uniform(size=alive.size) < -np.expm1(-rate * dx)) & (after > cfg.photon_cut_kev)
        if emit.any():
            k = cfg.photon_cut_kev * (after[emit] / cfg.photon_cut_kev) ** rng.uniform(size=int(emit.sum()))
            k = np.minimum(k, after[emit])
            ph_parent.append(after[emit])
            after = after.copy()
            after[emit] -= k
            ph_pos.append(new_pos[emit])
            ph_e.append(k)
            ph_el.append(el.root[alive[emit]])
        if max_path_mm is not None:
            stop = (el.generation[alive] == 0) & (el.path[alive] >= max_path_mm) & (after > 0)
            remaining[alive[stop]] = after[stop]
            after = np.where(stop, 0.0, after)
        el.energy[alive] = after
        # multiple scattering over the step, with the energy at its middle
        el.d[alive] = scatter(rng, dd, condensed_scattering_sigma(cfg, e_mid_mev, dx))
        alive = alive[after > 0]
        if born is not None and born.size:
            alive = np.concatenate([alive, born])

    def cat(chunks, shape, dtype=np.float64):
        return np.concatenate(chunks) if chunks else np.zeros(shape, dtype)

    return {
        "deposit_mm": cat(dep_pos, (0, 3)), "deposit_kev": cat(dep_e, (0,)),
        "deposit_electron": cat(dep_el, (0,), np.int64), "deposit_blob": cat(dep_blob, (0,), bool),
        "deposit_generation": cat(dep_gen, (0,), np.int8),
        "end_mm": el.pos[:n_el].copy(), "path_mm": el.path[:n_el].copy(), "remaining_kev": remaining,
        "photon_origin_mm": cat(ph_pos, (0, 3)), "photon_kev": cat(ph_e, (0,)),
        "photon_electron": cat(ph_el, (0,), np.int64), "photon_parent_kev": cat(ph_parent, (0,)),
        "delta_origin_mm": cat(de_pos, (0, 3)), "delta_kev": cat(de_e, (0,)),
        "delta_electron": cat(de_el, (0,), np.int64), "delta_parent_kev": cat(de_parent, (0,)),
    }


def _transport_electrons_renner2017(rng: np.random.Generator, cfg: NextSimConfig, start_mm: np.ndarray,
                                    direction: np.ndarray, kinetic_kev: np.ndarray) -> dict[str, np.ndarray]:
    """The former toy (data.sim.transport=renner2017), unchanged.

    Step all electrons together. Returns deposits (position, energy, electron id, blob flag) and
    bremsstrahlung photons (origin, energy, electron id) as flat arrays."""
    n_el = len(kinetic_kev)
    energy_tbl, step_tbl, rad_tbl = step_table(cfg, float(kinetic_kev.max()))
    n_steps = np.ceil(kinetic_kev / cfg.step_kev - 1e-9).astype(int)
    pos = start_mm.astype(np.float64).copy()
    d = direction.astype(np.float64).copy()
    energy = kinetic_kev.astype(np.float64).copy()
    max_steps = int(n_steps.max())
    dep_pos = np.empty((max_steps, n_el, 3))
    dep_e = np.zeros((max_steps, n_el))
    remaining_after = np.zeros((max_steps, n_el))
    path = np.zeros(n_el)
    for k in range(max_steps):
        alive = energy > 0
        if not alive.any():
            break
        # steps left including this one; the table is indexed from the end of the track
        left = np.ceil(energy / cfg.step_kev - 1e-9).astype(int)
        idx = np.clip(left - 1, 0, len(step_tbl) - 1)
        de = np.where(alive, np.minimum(energy, cfg.step_kev), 0.0)
        # the final partial step is shortened in proportion to its energy
        dx = np.where(alive, step_tbl[idx] * de / cfg.step_kev, 0.0)
        mid = pos + 0.5 * dx[:, None] * d
        pos = pos + dx[:, None] * d
        path += dx
        dep_pos[k] = mid
        dep_e[k] = de
        energy = energy - de
        remaining_after[k] = energy
        # Highland kick with the momentum at the start of the step, as dnntoy does
        e_mev = np.maximum(energy + de, 1e-3) / 1e3
        sigma = physics.highland_sigma_rad(e_mev, np.maximum(dx, 1e-9), cfg.radiation_length_mm)
        theta = sigma * np.sqrt(rng.standard_normal(n_el) ** 2 + rng.standard_normal(n_el) ** 2)
        phi = rng.uniform(0, 2 * np.pi, n_el)
        u, v = _perpendicular_basis(d)
        kick = np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v
        new_d = np.cos(theta)[:, None] * d + np.sin(theta)[:, None] * kick
        d = np.where(alive[:, None], new_d, d)
    rad_frac = rad_tbl[np.clip(np.ceil((remaining_after + dep_e) / cfg.step_kev - 1e-9).astype(int) - 1, 0, None)]
    rad_frac = np.where(dep_e > 0, rad_frac, 0.0)
    # Hard photons: the radiated energy above the cut, in photons with a 1/k spectrum up to the
    # electron energy. Mean photon energy (T - k_c) / ln(T / k_c); Poisson number per step.
    kinetic_before = remaining_after + dep_e
    k_cut = cfg.photon_cut_kev
    hard = kinetic_before > k_cut * 1.0001
    log_ratio = np.log(np.where(hard, kinetic_before / k_cut, 2.0))
    # fraction of the radiated energy of a 1/k spectrum that lies above the cut
    above_cut = np.where(hard, (kinetic_before - k_cut) / np.maximum(kinetic_before, 1e-9), 0.0)
    mean_k = np.where(hard, (kinetic_before - k_cut) / log_ratio, 1.0)
    n_photons = rng.poisson(np.where(hard, rad_frac * dep_e * above_cut / mean_k, 0.0))
    step_i, el_i = np.nonzero(n_photons)
    reps = n_photons[step_i, el_i]
    step_i, el_i = np.repeat(step_i, reps), np.repeat(el_i, reps)
    t_max = kinetic_before[step_i, el_i]
    photon_kev = k_cut * (t_max / k_cut) ** rng.uniform(0, 1, step_i.size)
    # The photon energy is taken from the electron's local deposits (energy is conserved exactly):
    # a photon may not take more than what the electron deposits from this step on.
    dep_flat_e = dep_e.copy()
    photon_kev = _withdraw_photon_energy(dep_flat_e, step_i, el_i, photon_kev)
    emitted = photon_kev > 0
    step_i, el_i, photon_kev = step_i[emitted], el_i[emitted], photon_kev[emitted]
    # the last blob_energy_kev of each electron is "blob"
    blob = (remaining_after + dep_e / 2 < cfg.blob_energy_kev) & (dep_e > 0)
    mask = dep_flat_e > 0
    el_grid = np.broadcast_to(np.arange(n_el), dep_e.shape)
    return {
        "deposit_mm": dep_pos[mask], "deposit_kev": dep_flat_e[mask], "deposit_electron": el_grid[mask],
        "deposit_blob": blob[mask], "end_mm": pos, "path_mm": path,
        "photon_origin_mm": dep_pos[step_i, el_i], "photon_kev": photon_kev, "photon_electron": el_i,
    }


def _withdraw_photon_energy(dep_e: np.ndarray, step_i: np.ndarray, el_i: np.ndarray,
                            photon_kev: np.ndarray) -> np.ndarray:
    """Subtract each photon's energy from the electron's deposits at and after its emission step, in place.

    Returns the photon energies actually taken (equal to the sampled ones unless the electron has
    less energy left to deposit)."""
    taken = np.zeros_like(photon_kev)
    for j in np.argsort(step_i, kind="stable"):
        need = photon_kev[j]
        column = dep_e[step_i[j]:, el_i[j]]
        cumulative = np.cumsum(column)
        cut = np.searchsorted(cumulative, need)
        if cut >= column.size:
            need = cumulative[-1]
            column[:] = 0.0
        else:
            column[:cut] = 0.0
            column[cut] = cumulative[cut] - need
        taken[j] = need
    return taken


def _absorb_photons(rng: np.random.Generator, cfg: NextSimConfig, origin_mm: np.ndarray,
                    photon_kev: np.ndarray) -> np.ndarray:
    """Where each photon deposits its energy: isotropic, exponential with the xenon attenuation length
    (first interaction treated as full absorption)."""
    length = physics.photon_attenuation_length_mm(photon_kev / 1e3, cfg.density_g_cm3)
    return origin_mm + _isotropic(rng, len(photon_kev)) * rng.exponential(length)[:, None]


def _diffuse(rng: np.random.Generator, cfg: NextSimConfig, pos_mm: np.ndarray, energy_kev: np.ndarray,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split deposits into charge packets and drift them to the anode (z = 0) with Gaussian diffusion."""
    n_packets = np.maximum(1, np.round(energy_kev / cfg.packet_energy_kev)).astype(int)
    source = np.repeat(np.arange(len(energy_kev)), n_packets)
    packet_kev = (energy_kev / n_packets)[source]
    start = pos_mm[source]
    drift_cm = np.clip(start[:, 2], 0, None) / 10.0
    sigma_t = cfg.transverse_diffusion_mm_per_sqrt_cm * np.sqrt(drift_cm)
    sigma_l = cfg.longitudinal_diffusion_mm_per_sqrt_cm * np.sqrt(drift_cm)
    noise = rng.standard_normal(start.shape) * np.column_stack([sigma_t, sigma_t, sigma_l])
    return start + noise, packet_kev, source


def _voxelise(cfg: NextSimConfig, pos_mm: np.ndarray, energy_kev: np.ndarray, segment: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Sum packets into detector voxels. Returns indices, energies, majority-energy segment labels and
    the energy that fell outside the detector."""
    grid = np.array(cfg.grid_shape)
    index = np.floor(pos_mm / cfg.voxel_size_mm).astype(np.int64)
    inside = np.all((index >= 0) & (index < grid), axis=1)
    outside_kev = float(energy_kev[~inside].sum())
    index, energy_kev, segment = index[inside], energy_kev[inside], segment[inside]
    flat = np.ravel_multi_index(index.T, grid)
    keys, inverse = np.unique(flat, return_inverse=True)
    voxel_kev = np.bincount(inverse, weights=energy_kev, minlength=keys.size)
    per_class = np.stack([np.bincount(inverse, weights=energy_kev * (segment == c), minlength=keys.size)
                          for c in range(len(SEGMENT_CLASSES))], axis=1)
    voxel_index = np.stack(np.unravel_index(keys, grid), axis=1)
    return voxel_index.astype(np.int32), voxel_kev, per_class.argmax(axis=1).astype(np.int8), outside_kev


def _apply_threshold(cfg: NextSimConfig, index: np.ndarray, voxel_kev: np.ndarray, voxel_seg: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop voxels below the energy threshold and give their energy to the nearest kept voxel, as the
    NEXT reconstruction (IC `drop_end_point_voxels`) does, so the threshold does not lose energy."""
    keep = voxel_kev >= cfg.energy_threshold_kev
    if keep.all() or not keep.any():
        return index, voxel_kev, voxel_seg
    _, nearest = cKDTree(index[keep]).query(index[~keep])
    kept_kev = voxel_kev[keep] + np.bincount(nearest, weights=voxel_kev[~keep], minlength=int(keep.sum()))
    return index[keep], kept_kev, voxel_seg[keep]


def _primary_electrons(rng: np.random.Generator, cfg: NextSimConfig, is_signal: np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Event index, kinetic energy and direction of the primary electrons of events with a vertex: two sharing
    Q_bb per signal event (Primakoff-Rosen energies, 1 - beta1 beta2 cos angular correlation), one of Q_bb per
    electron-background event."""
    n_ev = len(is_signal)
    first_kev = np.where(is_signal, _electron_energy_split(rng, cfg.q_bb_kev, n_ev), cfg.q_bb_kev)
    first_dir = _isotropic(rng, n_ev)
    second_kev = cfg.q_bb_kev - first_kev[is_signal]
    second_dir = _second_direction(rng, first_dir[is_signal], _beta(first_kev[is_signal]), _beta(second_kev))
    event_of = np.concatenate([np.arange(n_ev), np.flatnonzero(is_signal)])
    return event_of, np.concatenate([first_kev, second_kev]), np.concatenate([first_dir, second_dir])


def _finish_events(rng: np.random.Generator, cfg: NextSimConfig, labels: np.ndarray, pos: np.ndarray,
                   kev: np.ndarray, seg: np.ndarray, ev: np.ndarray, vertex: np.ndarray, ends: list,
                   path: np.ndarray, escaped_photon_kev: np.ndarray, keep: np.ndarray,
                   needed: dict[int, int] | None = None) -> list[NextEvent]:
    """Diffuse the deposits of each kept event, voxelise, threshold, smear its energy with the resolution; drop
    events with energy deposited within veto_margin_mm of the detector surface (before diffusion). `needed`: see
    simulate_batch."""
    n_ev = len(labels)
    size = np.array(cfg.detector_size_mm)
    inside = np.all((pos >= 0) & (pos < size), axis=1)
    keep = keep.copy()
    if cfg.veto_margin_mm is not None:
        near_surface = (kev > 0) & ~np.all((pos >= cfg.veto_margin_mm) & (pos <= size - cfg.veto_margin_mm), axis=1)
        keep[ev[near_surface]] = False
    deposited = np.bincount(ev[inside], weights=kev[inside], minlength=n_ev)
    escaped = np.bincount(ev[~inside], weights=kev[~inside], minlength=n_ev) + escaped_photon_kev
    if cfg.detector_response == "sensors":
        return _sensor_events(rng, cfg, labels, pos[inside], kev[inside], seg[inside], ev[inside], vertex, ends,
                              path, deposited, escaped, keep, needed)
    packets_mm, packet_kev, source = _diffuse(rng, cfg, pos, kev)
    packet_event = ev[source]
    packet_seg = seg[source]
    order = np.argsort(packet_event, kind="stable")
    bounds = np.searchsorted(packet_event[order], np.arange(n_ev + 1))
    sigma_rel = cfg.energy_resolution_fwhm / 2.3548 * np.sqrt(cfg.q_bb_kev)
    events = []
    for i in np.flatnonzero(keep):
        sel = order[bounds[i]:bounds[i + 1]]
        if sel.size == 0:
            continue
        index, voxel_kev, voxel_seg, _ = _voxelise(cfg, packets_mm[sel], packet_kev[sel], packet_seg[sel])
        if voxel_kev.size == 0:
            continue
        index, voxel_kev, voxel_seg = _apply_threshold(cfg, index, voxel_kev, voxel_seg)
        total = voxel_kev.sum()
        # resolution scales as 1/sqrt(E): sigma_E = fwhm/2.355 * sqrt(Q_bb * E)
        smear = 1 + rng.standard_normal() * sigma_rel / np.sqrt(max(total, 1e-9))
        voxel_kev = (voxel_kev * smear).astype(np.float32)
        events.append(NextEvent(
            label=int(labels[i]), voxel_index=index, voxel_energy_kev=voxel_kev, voxel_segment=voxel_seg,
            energy_kev=float(voxel_kev.sum()), vertex_mm=vertex[i], track_ends_mm=ends[i],
            path_length_mm=float(path[i]), deposited_kev=float(deposited[i]), escaped_kev=float(escaped[i]),
        ))
    return events


def _sensor_events(rng: np.random.Generator, cfg: NextSimConfig, labels: np.ndarray, pos: np.ndarray,
                   kev: np.ndarray, seg: np.ndarray, ev: np.ndarray, vertex: np.ndarray, ends: list, path: np.ndarray,
                   deposited: np.ndarray, escaped: np.ndarray, keep: np.ndarray,
                   needed: dict[int, int] | None = None) -> list[NextEvent]:
    """detector_response=sensors: each kept event's deposits (inside the detector) through numl.sim.next.response:
    electrons, sensor hits with the per-event calibration residual, voxels (deconvolved or not), threshold. Events
    whose hit energy lies more than 1 keV outside energy_roi_kev are left out here already, and so are the events
    of a label of which `needed` events in the ROI have been made (see simulate_batch)."""
    order = np.argsort(ev, kind="stable")
    bounds = np.searchsorted(ev[order], np.arange(len(labels) + 1))
    made = {0: 0, 1: 0}
    events = []
    for i in np.flatnonzero(keep):
        rows = order[bounds[i]:bounds[i + 1]]
        electrons_mm, source = response.ionise_and_drift(rng, cfg, pos[rows], kev[rows])
        hit_mm, hit_kev = response.sensor_hits(rng, cfg, electrons_mm)
        if not len(hit_kev):
            continue
        hit_kev = hit_kev * (1 + rng.standard_normal() * cfg.energy_calibration_residual)
        # voxelising and deconvolving keep the hits' energy (to float rounding and the few cells past the walls):
        # an event clearly outside the ROI, which every caller drops, is dropped before that costly part
        if cfg.energy_roi_kev is not None and not (cfg.energy_roi_kev[0] - 1 <= hit_kev.sum()
                                                   <= cfg.energy_roi_kev[1] + 1):
            continue
        # the caller keeps no more events of this label: the voxels (the costly deconvolution) are not made. The
        # random numbers of this event are drawn above, so the events that are made stay the same
        if needed is not None and made[int(labels[i])] >= needed[int(labels[i])]:
            continue
        if cfg.deconvolution == "richardson_lucy":
            index, voxel_kev = response.richardson_lucy_voxels(cfg, hit_mm, hit_kev)
        else:
            index, voxel_kev, _, _ = _voxelise(cfg, hit_mm, hit_kev, np.zeros(len(hit_kev), np.int8))
        if not len(voxel_kev):
            continue
        voxel_seg = response.label_voxels(cfg, index, electrons_mm, seg[rows][source], len(SEGMENT_CLASSES))
        index, voxel_kev, voxel_seg = _apply_threshold(cfg, index, voxel_kev, voxel_seg)
        voxel_kev = voxel_kev.astype(np.float32)
        events.append(NextEvent(
            label=int(labels[i]), voxel_index=index, voxel_energy_kev=voxel_kev, voxel_segment=voxel_seg,
            energy_kev=float(voxel_kev.sum()), vertex_mm=vertex[i], track_ends_mm=ends[i],
            path_length_mm=float(path[i]), deposited_kev=float(deposited[i]), escaped_kev=float(escaped[i]),
        ))
        made[int(labels[i])] += in_energy_roi(cfg, events[-1])
    return events


def simulate_batch(cfg: NextSimConfig, rng: np.random.Generator, labels: np.ndarray,
                   needed: dict[int, int] | None = None) -> list[NextEvent]:
    """Simulate one batch of events with the given labels (1 signal, 0 background: one electron of Q_bb, or one
    gamma entering the detector; with sample=tl208_double_escape every event is a 208Tl gamma and its label, 1 for
    a pair conversion, is set by the simulation). Returns the events that pass the fiducial veto (not yet the energy
    ROI); gamma events that deposit nothing, or are sure to miss the ROI, are left out. `needed` ({label: n}):
    the caller keeps only the first n events of each label in the ROI, so with detector_response=sensors the
    later ones are not voxelised (with a 2 mm deconvolution, most of a batch's time); the events returned before
    that are the same as without it."""
    if cfg.photon_transport == "first_interaction":
        return _simulate_batch_first_interaction(cfg, rng, labels, needed)
    return _simulate_batch_cascade(cfg, rng, labels, needed)


def _simulate_batch_first_interaction(cfg: NextSimConfig, rng: np.random.Generator, labels: np.ndarray,
                                      needed: dict[int, int] | None = None) -> list[NextEvent]:
    """The former batch (photon_transport=first_interaction): electrons only, each bremsstrahlung photon
    absorbed at one point (_absorb_photons)."""
    n_ev = len(labels)
    size = np.array(cfg.detector_size_mm)
    vertex = rng.uniform(cfg.fiducial_margin_mm, size - cfg.fiducial_margin_mm, (n_ev, 3))
    event_of, kinetic, direction = _primary_electrons(rng, cfg, labels.astype(bool))
    tracks = _transport_electrons(rng, cfg, vertex[event_of], direction, kinetic)

    dep_event = event_of[tracks["deposit_electron"]]
    dep_segment = np.where(tracks["deposit_blob"], BLOB, TRACK).astype(np.int8)
    photon_event = event_of[tracks["photon_electron"]]
    photon_at = _absorb_photons(rng, cfg, tracks["photon_origin_mm"], tracks["photon_kev"])
    pos = np.concatenate([tracks["deposit_mm"], photon_at])
    kev = np.concatenate([tracks["deposit_kev"], tracks["photon_kev"]])
    seg = np.concatenate([dep_segment, np.full(len(photon_at), OTHER, np.int8)])
    ev = np.concatenate([dep_event, photon_event])
    path = np.bincount(event_of, weights=tracks["path_mm"], minlength=n_ev)
    ends = []
    for i in range(n_ev):
        electrons = np.flatnonzero(event_of == i)
        own_ends = tracks["end_mm"][electrons]
        ends.append(np.stack([vertex[i], own_ends[0]]) if len(electrons) == 1 else own_ends)
    return _finish_events(rng, cfg, labels, pos, kev, seg, ev, vertex, ends, path, np.zeros(n_ev),
                          np.ones(n_ev, bool), needed)


def surface_gammas(rng: np.random.Generator, size_mm: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Entry points and directions of gammas of an isotropic flux crossing into the box [0, size_mm]: faces chosen
    in proportion to their area, points uniform on them, directions cosine-weighted about the inward normal
    (cos theta = sqrt(u), the Lambert law of an isotropic flux through a surface)."""
    size_mm = np.asarray(size_mm, dtype=np.float64)
    areas = np.array([size_mm[1] * size_mm[2], size_mm[0] * size_mm[2], size_mm[0] * size_mm[1]])
    axis = rng.choice(3, size=n, p=areas / areas.sum())
    high_side = rng.uniform(size=n) < 0.5
    pos = rng.uniform(size=(n, 3)) * size_mm
    rows = np.arange(n)
    pos[rows, axis] = np.where(high_side, size_mm[axis], 0.0)
    normal = np.zeros((n, 3))
    normal[rows, axis] = np.where(high_side, -1.0, 1.0)
    direction = photons.rotate(normal, np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n))
    return pos, direction


def _main_electrons(kev: np.ndarray, owner: np.ndarray, pair: np.ndarray, n_ev: int) -> np.ndarray:
    """The main track(s) of a gamma event: its most energetic electron, with its partner if that came from a pair
    (the NEXT segmentation's track / blob labels go to them; every other electron's deposits are "other")."""
    main = np.zeros(len(kev), bool)
    if not len(kev):
        return main
    order = np.lexsort((-kev, owner))
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
    main[first] = True
    pairs = pair[first][pair[first] >= 0]
    main |= np.isin(pair, pairs) & (pair >= 0)
    return main


def _simulate_batch_cascade(cfg: NextSimConfig, rng: np.random.Generator, labels: np.ndarray,
                            needed: dict[int, int] | None = None) -> list[NextEvent]:
    """Events with full photon transport (photon_transport=xcom): signal and electron-background events start
    from their primary electrons at a vertex in the fiducial box, gamma-background events from a 208Tl / 214Bi
    gamma on the detector surface. Photons (numl.sim.next.photons) and electrons (the electron transport) are
    followed in turn until none is left: electrons' bremsstrahlung photons and positrons' annihilation photons
    (two back-to-back 511 keV photons where the positron stops: annihilation in flight, a few %, is neglected)
    go to the photon transport, the electrons that photons set moving to the electron transport. Positrons are
    transported as electrons (their stopping power differs from the electrons' by a few % at these energies,
    Bhabha instead of Moller; not modelled). Before each electron stage an event is dropped if its deposited
    energy can no longer land in the ROI (ROI_PRUNE_SIGMAS) or it has deposited energy in the veto margin."""
    n_ev = len(labels)
    size = np.array(cfg.detector_size_mm)
    density = cfg.density_g_cm3
    double_escape = cfg.sample == "tl208_double_escape"
    is_signal = labels.astype(bool)
    from_vertex = np.zeros(n_ev, bool) if double_escape else is_signal | (cfg.background == "electron")
    vertex = rng.uniform(cfg.fiducial_margin_mm, size - cfg.fiducial_margin_mm, (n_ev, 3))
    vertex_events = np.flatnonzero(from_vertex)
    event_of, kinetic, direction = _primary_electrons(rng, cfg, is_signal[vertex_events])
    el = {"pos": vertex[vertex_events[event_of]], "dir": direction, "kev": kinetic,
          "event": vertex_events[event_of], "main": np.ones(len(kinetic), bool),
          "positron": np.zeros(len(kinetic), bool)}
    gamma_events = np.flatnonzero(~from_vertex)
    ph = {"pos": np.zeros((0, 3)), "dir": np.zeros((0, 3)), "kev": np.zeros(0), "event": np.zeros(0, np.int64)}
    if gamma_events.size:
        lines = np.array(BACKGROUND_LINES_KEV["tl208" if double_escape else cfg.background])
        gamma_kev = lines[rng.integers(len(lines), size=gamma_events.size)]
        entry, gamma_dir = surface_gammas(rng, size, gamma_events.size)
        vertex[gamma_events] = entry
        ph = {"pos": entry, "dir": gamma_dir, "kev": gamma_kev, "event": gamma_events}

    dep_pos, dep_kev, dep_seg, dep_ev = [], [], [], []
    escaped = np.zeros(n_ev)
    deposited = np.zeros(n_ev)
    alive = np.ones(n_ev, bool)
    near_surface = np.zeros(n_ev, bool)
    ends: list[list[np.ndarray]] = [[] for _ in range(n_ev)]
    path = np.zeros(n_ev)
    # only the gammas entering the detector make main tracks: in a batch without them (signal or electron
    # background alone) the first photons are bremsstrahlung / annihilation photons, whose electrons are "other"
    primary_photons = bool(gamma_events.size)
    converted = np.zeros(n_ev, bool)  # the entering gamma (or a photon of its chain) made an e+e- pair

    def add_deposits(pos, kev, seg, ev):
        dep_pos.append(pos)
        dep_kev.append(kev)
        dep_seg.append(seg)
        dep_ev.append(ev)
        deposited[:] += np.bincount(ev, weights=kev, minlength=n_ev)
        if cfg.veto_margin_mm is not None:
            near = (kev > 0) & ~np.all((pos >= cfg.veto_margin_mm) & (pos <= size - cfg.veto_margin_mm), axis=1)
            near_surface[ev[near]] = True

    sigma = cfg.energy_resolution_fwhm / 2.3548 * np.sqrt(cfg.q_bb_kev)
    while len(el["kev"]) or len(ph["kev"]):
        if len(ph["kev"]):
            out = photons.transport_photons(rng, size, density, ph["pos"], ph["dir"], ph["kev"], ph["event"])
            escaped += np.bincount(out["escaped_owner"], weights=out["escaped_kev"], minlength=n_ev)
            add_deposits(out["local_mm"], out["local_kev"], np.full(len(out["local_kev"]), OTHER, np.int8),
                         out["local_owner"])
            if primary_photons:
                main = _main_electrons(out["electron_kev"], out["electron_owner"], out["electron_pair"], n_ev)
                converted[out["electron_owner"][out["electron_positron"]]] = True
            else:
                main = np.zeros(len(out["electron_kev"]), bool)
            primary_photons = False
            el = {"pos": np.concatenate([el["pos"], out["electron_mm"]]),
                  "dir": np.concatenate([el["dir"], out["electron_dir"]]),
                  "kev": np.concatenate([el["kev"], out["electron_kev"]]),
                  "event": np.concatenate([el["event"], out["electron_owner"]]),
                  "main": np.concatenate([el["main"], main]),
                  "positron": np.concatenate([el["positron"], out["electron_positron"]])}
        # drop events that can no longer land in the ROI, or that touched the veto margin
        if cfg.energy_roi_kev is not None:
            pending = np.bincount(el["event"], weights=el["kev"] + el["positron"] * 2 * photons.ELECTRON_MASS_KEV,
                                  minlength=n_ev)
            low, high = cfg.energy_roi_kev
            alive &= deposited + pending >= low - ROI_PRUNE_SIGMAS * sigma * np.sqrt(low)
            alive &= deposited <= high + ROI_PRUNE_SIGMAS * sigma * np.sqrt(high)
        alive &= ~near_surface
        go = alive[el["event"]] & (el["kev"] > 0)
        el = {k: v[go] for k, v in el.items()}
        if not len(el["kev"]):
            break
        tracks = _transport_electrons(rng, cfg, el["pos"], el["dir"], el["kev"])
        root = tracks["deposit_electron"]
        seg = np.where(el["main"][root], np.where(tracks["deposit_blob"], BLOB, TRACK), OTHER).astype(np.int8)
        add_deposits(tracks["deposit_mm"], tracks["deposit_kev"], seg, el["event"][root])
        for j in np.flatnonzero(el["main"]):
            ends[el["event"][j]].append((el["pos"][j], tracks["end_mm"][j]))
            path[el["event"][j]] += tracks["path_mm"][j]
        # bremsstrahlung photons (isotropic, as before: the electron's direction is randomised by scattering
        # on the scale of the photon's path) and annihilation photons where positrons stop
        positrons = np.flatnonzero(el["positron"])
        back_to_back = photons.isotropic(rng, positrons.size)
        n_brems = len(tracks["photon_kev"])
        ph = {"pos": np.concatenate([tracks["photon_origin_mm"], tracks["end_mm"][positrons],
                                     tracks["end_mm"][positrons]]),
              "dir": np.concatenate([photons.isotropic(rng, n_brems), back_to_back, -back_to_back]),
              "kev": np.concatenate([tracks["photon_kev"], np.full(2 * positrons.size, photons.ELECTRON_MASS_KEV)]),
              "event": np.concatenate([el["event"][tracks["photon_electron"]], el["event"][positrons],
                                       el["event"][positrons]])}
        el = {k: v[:0] for k, v in el.items()}

    def cat(chunks, shape, dtype=np.float64):
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(shape, dtype)

    track_ends = []
    for i in range(n_ev):
        own = ends[i]
        if len(own) >= 2:  # signal pair, or electron and positron: the two electrons' ends
            track_ends.append(np.stack([own[0][1], own[1][1]]))
        elif own:  # one electron: its start and end
            track_ends.append(np.stack(own[0]))
        else:
            alive[i] = False
            track_ends.append(np.zeros((2, 3)))
    if double_escape:
        labels = converted.astype(np.int64)
    return _finish_events(rng, cfg, labels, cat(dep_pos, (0, 3)), cat(dep_kev, (0,)),
                          cat(dep_seg, (0,), np.int8), cat(dep_ev, (0,), np.int64), vertex, track_ends, path,
                          escaped, alive, needed)


def simulate_events(cfg: NextSimConfig, n_events: int, seed: int | np.random.SeedSequence, progress: bool = False,
                    labels: np.ndarray | None = None) -> list[NextEvent]:
    """`n_events` events in the energy ROI, signal with probability `signal_fraction`; a pure function
    of (cfg, seed). Events outside the ROI (or vetoed) are replaced by new ones with the same label; gamma
    backgrounds draw GAMMAS_PER_SLOT gammas per batch slot, most of which miss the ROI."""
    check_positive("n_events", n_events, integer=True)
    rng = np.random.default_rng(seed)
    if labels is None:
        labels = (rng.uniform(size=n_events) < cfg.signal_fraction).astype(np.int64)
    slots = {lab: list(np.flatnonzero(labels == lab)) for lab in (0, 1)}
    events: list[NextEvent | None] = [None] * n_events
    gammas = cfg.background != "electron"
    with progress_of("simulating NEXT events", n_events, disable=not progress, transient=True) as bar:
        while slots[0] or slots[1]:
            if cfg.sample == "tl208_double_escape":  # every event is a gamma; its truth gives the label
                pending = np.zeros(GAMMAS_PER_SLOT * cfg.events_per_batch, np.int64)
            elif gammas:
                n_gammas = GAMMAS_PER_SLOT * cfg.events_per_batch if slots[0] else 0
                n_signal = min(len(slots[1]), cfg.events_per_batch)
                pending = np.repeat([0, 1], [n_gammas, n_signal])
            else:
                pending = np.array([lab for lab in (0, 1) for _ in slots[lab]])[: cfg.events_per_batch]
            needed = {label: len(waiting) for label, waiting in slots.items()}
            for event in simulate_batch(cfg, rng, pending, needed):
                if not in_energy_roi(cfg, event):
                    continue
                if slots[event.label]:
                    events[slots[event.label].pop(0)] = event
                    bar.advance()
    return events


def in_energy_roi(cfg: NextSimConfig, event: NextEvent) -> bool:
    roi = cfg.energy_roi_kev
    return roi is None or roi[0] <= event.energy_kev <= roi[1]


def background_acceptance(cfg: NextSimConfig, n_gammas: int, seed: int) -> tuple[list[NextEvent], int]:
    """Simulate `n_gammas` background gammas entering the detector (in batches of GAMMAS_PER_SLOT *
    events_per_batch) and return those that land in the energy ROI and pass the veto, with n_gammas."""
    if cfg.background == "electron":
        raise ConfigError("data.sim.background='electron': background_acceptance needs a gamma background")
    rng = np.random.default_rng(seed)
    batch = GAMMAS_PER_SLOT * cfg.events_per_batch
    kept = []
    for start in range(0, n_gammas, batch):
        labels = np.zeros(min(batch, n_gammas - start), np.int64)
        kept += [e for e in simulate_batch(cfg, rng, labels) if in_energy_roi(cfg, e)]
    return kept, n_gammas
