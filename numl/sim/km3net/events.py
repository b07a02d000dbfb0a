"""Neutrino events in a KM3NeT detector: Cherenkov hits of muon tracks and showers, K-40 noise, an L1 trigger.

A pure function of (detector, config, seed). Expected photo-electrons per PMT are computed analytically for
direct light (cylindrical spread around a track, spherical around a shower), attenuated by absorption and
weighted by the PMT angular acceptance; counts are Poisson, and each photo-electron's time is the Cherenkov
arrival time plus a scattering delay (for photons that scattered) plus the PMT transit-time spread. Photons
on one PMT closer than the merge window pile up into one hit whose time-over-threshold grows with the charge.

nu_mu CC kinematics (``kinematics: dis``, numl.sim.km3net.kinematics): Bjorken x and y from the leading-order DIS
cross section; the muon leaves at its exact angle to the neutrino with (1 - y) E, the hadronic shower at the vertex
gets y E along the momentum the muon leaves behind. ``kinematics: collinear`` is the former model: y uniform on
[0, 1] and muon and shower along the neutrino.

Vertices (``vertex_sampling: muon_range``) are uniform in space wherever the muon reaches the can before it stops, as
gSeaGen generates in a volume grown by the muon range: above ~50 GeV most triggered events are muons from vertices
outside the detector. ``vertex_sampling: can`` is the former model (vertices only inside the can).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from numl.sim.km3net import kinematics as dis
from numl.sim.km3net import physics
from numl.sim.km3net.atmospheric import BundleGenerator
from numl.sim.km3net.detector import Detector
from numl.sim.km3net.trigger import TRIGGERS, trigger_flags
from numl.utils.errors import ConfigError, check_choice, check_keys, check_positive, check_range
from numl.utils.progress import track

HIT_DTYPE = np.dtype([
    ("pos_x", "f4"), ("pos_y", "f4"), ("pos_z", "f4"),  # PMT position (m)
    ("dir_x", "f4"), ("dir_y", "f4"), ("dir_z", "f4"),  # PMT pointing direction
    ("t_ns", "f8"), ("tot_ns", "f4"),
    ("dom_id", "i8"), ("du_id", "i4"), ("channel_id", "i4"),
    ("triggered", "?"),  # an L1 hit (two PMTs of one DOM within the window) or an L0 hit causally tied to one
    ("is_signal", "i1"),  # 1 Cherenkov light, 0 K-40 noise, -1 unknown (real data)
])

TRUTH_DTYPE = np.dtype([
    ("dir_x", "f8"), ("dir_y", "f8"), ("dir_z", "f8"),  # neutrino direction (the network's target)
    ("energy_gev", "f8"), ("log10_energy", "f8"),
    ("vertex_x", "f8"), ("vertex_y", "f8"), ("vertex_z", "f8"), ("vertex_time_ns", "f8"),
    ("event_type", "i4"),  # EVENT_TYPES: 0 nu_mu CC, 1 one shower of the whole energy, 2 nu_e CC, 3 NC,
    # 4 atmospheric muon bundle (direction: its axis; energy and muon_energy_gev: its muons' summed at the can;
    # muon_range_m: its most energetic muon's; vertex: the axis's impact point on the can)
    ("muon_energy_gev", "f8"), ("shower_energy_gev", "f8"), ("muon_range_m", "f8"),
    ("n_signal_hits", "i4"),
    ("muon_dir_x", "f8"), ("muon_dir_y", "f8"), ("muon_dir_z", "f8"),  # at the vertex (zeros without a muon)
    ("bjorken_x", "f8"), ("bjorken_y", "f8"),  # NaN where unknown (collinear: x; a real file without them)
    ("n_muons", "i4"),  # muons entering the can: 1 nu_mu CC, 0 showers, the bundle's muons; -1 real files (not read)
])

EVENT_TYPES = {"numu_cc": 0, "shower": 1, "nue_cc": 2, "nc": 3, "atmospheric_muon": 4}


def is_track_event(event_type):
    """The track class of particle identification (ORCA's): nu_mu CC; every other type is a shower."""
    return event_type == EVENT_TYPES["numu_cc"]


def is_atmospheric_muon_event(event_type):
    """The background class of a neutrino telescope: muon bundles from cosmic-ray showers, not neutrinos."""
    return event_type == EVENT_TYPES["atmospheric_muon"]

#: proposals per draw of one atmospheric bundle (about 8 accepted at ORCA's depth; more are drawn when none is kept)
ATMOSPHERIC_PROPOSAL_BATCH = 64

#: what the events that are not nu_mu CC are (EventConfig.shower_interaction): one EM shower of the neutrino's whole
#: energy along it (total_energy, the former model, event type "shower"); nu_e CC (the electron's EM shower and the
#: hadronic shower, DIS kinematics); or NC (the hadronic shower of y E alone, the outgoing neutrino unseen). NC and
#: the electron take the nu_mu CC kinematics (numl.sim.km3net.kinematics): the lepton mass matters only near
#: threshold, and the NC y distribution is close to the CC one (assumption; both are DIS on an isoscalar target).
SHOWER_INTERACTIONS = ("total_energy", "nue_cc", "nc")
#: where a shower's light comes from: its vertex (point, the former model), or points along its axis weighted by the
#: EM longitudinal profile (physics.em_shower_profile: maximum at 2.3 m and 99.5 % within 8 m at 100 GeV)
SHOWER_PROFILES = ("point", "longitudinal")
#: the muon's light: radiative losses on its Cherenkov cone (the former model), or delta rays and radiative losses
#: as EM showers along the track (EventConfig.muon_light)
MUON_LIGHT_MODELS = ("cone", "cone_and_showers")
#: nu_mu CC kinematics: deep-inelastic (x, y from the cross section, the muon's angle to the neutrino) or the
#: former collinear model (y uniform, muon and shower along the neutrino)
KINEMATICS = ("dis", "collinear")
#: where interaction vertices lie: uniform in space wherever the muon reaches the can (muon_range), or only inside
#: the can (can: the former model, which misses the through-going muons that dominate above ~50 GeV)
VERTEX_SAMPLINGS = ("muon_range", "can")
#: the DIS tables need the inelastic threshold well below the lowest energy
DIS_ENERGY_MIN_GEV = 1.0


@dataclass(frozen=True)
class EventConfig:
    """Physics and detector-response settings; every field is a `data.events.<name>` config key."""

    numu_cc_fraction: float = 1.0  # of the neutrino events; the rest are shower events, of the kind shower_interaction
    # Atmospheric muon bundles (numl.sim.km3net.atmospheric: MUPAGE's parametrisation, checked against KM3NeT's MUPAGE
    # files) as this share of the events, before the trigger; 0: neutrinos only (the former model). The site: the
    # seabed lies atmospheric_seabed_depth_m below the sea surface (ORCA 2450 m, ARCA 3450 m; KM3NeT's MUPAGE headers),
    # at seabed_z_m (or the can's bottom); bundles whose muons carry less than atmospheric_bundle_energy_min_gev into
    # the can are drawn again (as MUPAGE's energy threshold); at most atmospheric_multiplicity_max muons per bundle.
    atmospheric_muon_fraction: float = 0.0
    atmospheric_seabed_depth_m: float = 2450.0
    atmospheric_bundle_energy_min_gev: float = 10.0
    atmospheric_multiplicity_max: int = 100
    shower_interaction: str = "total_energy"  # total_energy | nue_cc | nc (SHOWER_INTERACTIONS)
    kinematics: str = "dis"  # dis | collinear (KINEMATICS)
    energy_min_gev: float = 3.0
    energy_max_gev: float = 300.0
    spectral_index: float = 1.0  # dN/dE ~ E^-index; 1 is flat in log10 E
    dir_z_min: float = -1.0  # range of the z component of the propagation direction (-1: straight up-going)
    dir_z_max: float = 1.0
    can_margin_m: float = 10.0  # the can: the instrumented cylinder grown by this margin (muons missing it: not made)
    # z of the seabed in the detector's coordinates: the can stops there and nothing below it (rock) gives light;
    # None: water everywhere (the former model)
    seabed_z_m: float | None = None
    vertex_sampling: str = "muon_range"  # muon_range | can (VERTEX_SAMPLINGS)
    pmt_area_m2: float = 4.07e-3  # 72 mm photocathode of a 3-inch PMT (assumption)
    quantum_efficiency: float = 0.25  # averaged over 300-600 nm (assumption)
    pmt_acceptance_min_cos: float = -0.25  # acceptance rises linearly from this cos(incidence) to 1 (assumption)
    absorption_length_m: float = 60.0
    scattering_length_m: float = 50.0
    scattering_delay_ns_per_m: float = 0.5  # mean extra delay of a scattered photon per metre (assumption)
    # Light of the muon that scatters by a large angle (sea water's small-particle, near-isotropic part of the phase
    # function): this share of the muon's light (cone and loss showers) leaves its points on the track isotropically
    # and arrives an exponential delay of scattered_light_delay_ns (mean) after the straight path, so PMTs anywhere
    # near the track, also facing away from it, see late light. Needs muon_light=cone_and_showers; 0: none (the
    # former model, where scattering only delays photons on their way to the PMT they were headed for).
    scattered_light_fraction: float = 0.0
    scattered_light_delay_ns: float = 50.0  # fitted with the fraction 0.1 to the ORCA6 file (km3net_orca6.yaml)
    time_spread_ns: float = 1.5  # PMT transit-time spread, Gaussian sigma (assumption)
    hit_merge_window_ns: float = 25.0  # photons on one PMT closer than this make one hit (assumption)
    tot_1pe_ns: float = 26.0  # time over threshold of a single photo-electron (assumption)
    tot_log_slope_ns: float = 10.0  # ToT grows by this per e-fold of charge (assumption)
    tot_spread_ns: float = 4.0
    # The muon's light (MUON_LIGHT_MODELS). cone: the light of its radiative losses added to its Cherenkov cone (the
    # former model). cone_and_showers: the cone carries the bare muon's light only; delta rays and radiative losses
    # shine as EM showers from their points on the track (shower_angular_pdf around the muon), so PMTs off the cone
    # angle see them, later than direct light, as Jpp's muon PDFs have them (numl.sim.km3net.physics). Delta rays and
    # pair production: continuous, in steps of muon_light_step_m; bremsstrahlung and photonuclear losses above
    # stochastic_loss_min_gev: discrete showers (dN/dv ~ 1/v in the fraction v of the muon energy). Track points
    # farther than muon_light_reach_m from the instrumented cylinder give no shower light.
    muon_light: str = "cone"
    # The muon's mean energy loss a(E) + b E, which sets its range and its energy along the track
    # (physics.MUON_ENERGY_LOSS_MODELS): bethe_bloch (a(E) as the PDG muon tables compute it; CSDA ranges within 0.2 %
    # of PDG's for water) or constant_a (a = 0.27 GeV/m, the former model: ranges 10-14 % short at 1-10 GeV; the
    # KM3NeT study's earlier experiments keep it so that their tables rebuild).
    muon_energy_loss: str = "bethe_bloch"
    muon_light_step_m: float = 2.0
    stochastic_loss_min_gev: float = 1.0
    muon_light_reach_m: float = 100.0
    hadronic_light_fraction: float = 0.8  # hadronic showers give less light than electromagnetic (assumption)
    shower_angular_width: float = 0.2  # width in cos(theta) of the shower light around the Cherenkov cone
    shower_isotropic_fraction: float = 0.1
    # Hadronic showers take the EM profile too (assumption: a hadronic shower peaks at about 0.2 ln(E/GeV) + 0.7
    # interaction lengths, PDG review "Calorimetry"; in sea water (83.3 g/cm^2) 1.3 m at 100 GeV, close to the EM
    # shower's 2.3 m; the light yield, not the shape, is what hadronic_light_fraction lowers).
    shower_profile: str = "point"  # point | longitudinal (SHOWER_PROFILES)
    shower_profile_step_m: float = 0.5  # longitudinal: one light source per step along the axis
    noise_rate_hz: float = 7000.0  # K-40 hits per PMT, coincident ones included (PHYSICS.md: 5-10 kHz, assumption)
    # Genuine K-40 coincidences: one decay's light on two PMTs of a DOM, at k40_coincidence_scale times KM3NeT's
    # simulated rate per PMT pair (physics.k40_pair_rate_hz: 656 Hz per DOM, most between neighbouring PMTs), both
    # hits at the decay's time plus the transit-time spread. The singles make up the rest of noise_rate_hz.
    # 0: uncorrelated singles only (the former model), whose chance pairs within 10 ns are 456 Hz per DOM at 7 kHz.
    k40_coincidence_scale: float = 0.0
    l1_window_ns: float = 10.0
    trigger_min_l1_doms: int = 3
    # Triggered hits also include single (L0) hits causally connected to an L1 hit, as the official file's do (a
    # third of its DOMs with triggered hits have one, with no partner within 10 ns: JTE's shower and muon triggers
    # add L0 hits within a distance and light-travel time of the L1 hits). 0: L1 hits only. (assumption: values
    # chosen to match the file's triggered hits and DOMs, experiments/km3net_reconstruction/file_comparison.py)
    trigger_l0_max_distance_m: float = 10.0
    trigger_l0_time_extra_ns: float = 20.0
    # Which hits are triggered (numl.sim.km3net.trigger.TRIGGERS): l1_causal (L1 hits + the L0 rule above) or
    # muon_road (JTE's 3D-muon trigger: a direction scan, L1 hits causally compatible with one muon, and the hits
    # compatible with all of them). The road values are fitted to the ORCA6 file's own triggered hits (its run
    # file with JTE's parameters is not public): 79 % of the file's triggered hits found, 91 % of those found are
    # the file's (tests/test_km3net_trigger.py). The event triggers when the muon-road cluster spans
    # trigger_min_l1_doms DOMs.
    trigger: str = "l1_causal"
    trigger_road_directions: int = 200  # scanned directions, about 14 deg apart
    trigger_road_width_m: float = 120.0  # largest transverse separation of two L1 hits of one muon
    trigger_road_time_extra_ns: float = 20.0  # time tolerance beyond the Cherenkov causality of two L1 hits
    trigger_road_l0_width_m: float = 60.0  # the same for a hit joining the cluster (with every cluster hit)
    trigger_road_l0_time_extra_ns: float = 20.0
    readout_margin_ns: float = 300.0  # hits kept from this before the first to this after the last L1 hit
    max_trials: int = 1000  # regenerations allowed for one triggered event

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> EventConfig:
        values = dict(values or {})
        check_keys("data.events", values, (f.name for f in fields(cls)))
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        check_range("data.events.numu_cc_fraction", self.numu_cc_fraction, 0.0, 1.0)
        check_range("data.events.atmospheric_muon_fraction", self.atmospheric_muon_fraction, 0.0, 1.0)
        check_positive("data.events.atmospheric_seabed_depth_m", self.atmospheric_seabed_depth_m)
        check_positive("data.events.atmospheric_bundle_energy_min_gev", self.atmospheric_bundle_energy_min_gev)
        check_positive("data.events.atmospheric_multiplicity_max", self.atmospheric_multiplicity_max, integer=True)
        check_choice("data.events.shower_interaction", self.shower_interaction, SHOWER_INTERACTIONS)
        check_choice("data.events.shower_profile", self.shower_profile, SHOWER_PROFILES)
        check_positive("data.events.shower_profile_step_m", self.shower_profile_step_m)
        check_choice("data.events.kinematics", self.kinematics, KINEMATICS)
        check_choice("data.events.vertex_sampling", self.vertex_sampling, VERTEX_SAMPLINGS)
        check_choice("data.events.muon_light", self.muon_light, MUON_LIGHT_MODELS)
        physics.check_muon_energy_loss(self.muon_energy_loss)
        for key in ("muon_light_step_m", "stochastic_loss_min_gev", "muon_light_reach_m"):
            check_positive(f"data.events.{key}", getattr(self, key))
        check_positive("data.events.energy_min_gev", self.energy_min_gev)
        check_positive("data.events.energy_max_gev", self.energy_max_gev)
        if self.energy_max_gev < self.energy_min_gev:
            raise ConfigError(f"data.events.energy_max_gev={self.energy_max_gev}: must be >= energy_min_gev="
                              f"{self.energy_min_gev}")
        if self.kinematics == "dis" and self.energy_min_gev < DIS_ENERGY_MIN_GEV:
            raise ConfigError(f"data.events.energy_min_gev={self.energy_min_gev}: data.events.kinematics=dis needs "
                              f">= {DIS_ENERGY_MIN_GEV} GeV")
        check_range("data.events.dir_z_min", self.dir_z_min, -1.0, 1.0)
        check_range("data.events.dir_z_max", self.dir_z_max, self.dir_z_min, 1.0)
        check_positive("data.events.can_margin_m", self.can_margin_m, allow_zero=True)
        for key in ("pmt_area_m2", "absorption_length_m", "scattering_length_m", "hit_merge_window_ns",
                    "tot_1pe_ns", "l1_window_ns"):
            check_positive(f"data.events.{key}", getattr(self, key))
        for key in ("scattering_delay_ns_per_m", "time_spread_ns", "tot_log_slope_ns", "tot_spread_ns",
                    "noise_rate_hz", "k40_coincidence_scale", "readout_margin_ns", "shower_isotropic_fraction",
                    "trigger_l0_max_distance_m", "trigger_l0_time_extra_ns", "trigger_road_time_extra_ns",
                    "trigger_road_l0_time_extra_ns"):
            check_positive(f"data.events.{key}", getattr(self, key), allow_zero=True)
        check_range("data.events.quantum_efficiency", self.quantum_efficiency, 0.0, 1.0)
        check_range("data.events.hadronic_light_fraction", self.hadronic_light_fraction, 0.0, 1.0)
        check_range("data.events.pmt_acceptance_min_cos", self.pmt_acceptance_min_cos, -1.0, 0.99)
        check_range("data.events.shower_isotropic_fraction", self.shower_isotropic_fraction, 0.0, 1.0)
        check_range("data.events.scattered_light_fraction", self.scattered_light_fraction, 0.0, 1.0)
        check_positive("data.events.scattered_light_delay_ns", self.scattered_light_delay_ns)
        if self.scattered_light_fraction > 0.0 and self.muon_light != "cone_and_showers":
            raise ConfigError(f"data.events.scattered_light_fraction={self.scattered_light_fraction}: needs "
                              f"data.events.muon_light=cone_and_showers (is {self.muon_light})")
        check_positive("data.events.shower_angular_width", self.shower_angular_width)
        check_positive("data.events.trigger_min_l1_doms", self.trigger_min_l1_doms, integer=True)
        check_choice("data.events.trigger", self.trigger, TRIGGERS)
        check_positive("data.events.trigger_road_directions", self.trigger_road_directions, integer=True)
        check_positive("data.events.trigger_road_width_m", self.trigger_road_width_m)
        check_positive("data.events.trigger_road_l0_width_m", self.trigger_road_l0_width_m, allow_zero=True)
        check_positive("data.events.max_trials", self.max_trials, integer=True)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Event:
    hits: np.ndarray  # HIT_DTYPE, sorted by time
    truth: np.ndarray  # TRUTH_DTYPE scalar record


def pmt_acceptance(cos_incidence: np.ndarray, min_cos: float) -> np.ndarray:
    """Relative angular acceptance: 1 head-on, falling linearly to 0 at `min_cos` (light from behind)."""
    return np.clip((cos_incidence - min_cos) / (1.0 - min_cos), 0.0, 1.0)


def shower_angular_pdf(cos_theta: np.ndarray, width: float, isotropic_fraction: float) -> np.ndarray:
    """Probability density in cos(theta) (normalised on [-1, 1]) of shower light around the shower axis:
    a peak at the Cherenkov angle plus an isotropic part from the randomised shower particles."""
    c = physics.COS_CHERENKOV  # the peak's integral over [-1, 1] in closed form
    peak_norm = width * (2.0 - np.exp(-(1.0 - c) / width) - np.exp(-(1.0 + c) / width))
    peak = np.exp(-np.abs(cos_theta - c) / width) / peak_norm
    return (1.0 - isotropic_fraction) * peak + isotropic_fraction * 0.5


def sample_energy_gev(rng: np.random.Generator, config: EventConfig) -> float:
    """Power law dN/dE ~ E^-gamma between the configured bounds (inverse CDF)."""
    lo, hi, gamma = config.energy_min_gev, config.energy_max_gev, config.spectral_index
    u = rng.random()
    if abs(gamma - 1.0) < 1e-9:
        return float(lo * (hi / lo) ** u)
    a = 1.0 - gamma
    return float((lo**a + u * (hi**a - lo**a)) ** (1.0 / a))


def sample_direction(rng: np.random.Generator, config: EventConfig) -> np.ndarray:
    dz = rng.uniform(config.dir_z_min, config.dir_z_max)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    s = np.sqrt(1.0 - dz**2)
    return np.array([s * np.cos(phi), s * np.sin(phi), dz])


def can_m(detector: Detector, config: EventConfig) -> tuple[np.ndarray, float, float, float]:
    """(axis centre xy, radius, z_min, z_max) of the can: the instrumented cylinder grown by can_margin_m, cut at
    the seabed."""
    centre_xy, radius, z_min, z_max = detector.bounding_cylinder_m()
    margin = config.can_margin_m
    if config.seabed_z_m is None:
        return centre_xy, radius + margin, z_min - margin, z_max + margin
    if config.seabed_z_m > z_min:
        raise ConfigError(f"data.events.seabed_z_m={config.seabed_z_m}: above the lowest PMT of detector "
                          f"{detector.name} (z = {z_min:.1f} m)")
    return centre_xy, radius + margin, max(z_min - margin, config.seabed_z_m), z_max + margin


def sample_vertex_m(rng: np.random.Generator, detector: Detector, config: EventConfig) -> np.ndarray:
    """A vertex uniform in the can."""
    centre_xy, radius, z_min, z_max = can_m(detector, config)
    r = radius * np.sqrt(rng.random())
    phi = rng.uniform(0.0, 2.0 * np.pi)
    z = rng.uniform(z_min, z_max)
    return np.array([centre_xy[0] + r * np.cos(phi), centre_xy[1] + r * np.sin(phi), z])


def path_interval_in_can(start_m: np.ndarray, direction: np.ndarray, length_m: float | np.ndarray,
                         can: tuple) -> tuple[np.ndarray, np.ndarray]:
    """For each start point (N, 3): the range [lo, hi] of the path parameter s in [0, length] where
    start + s * direction lies inside the can (lo > hi: the segment misses it)."""
    centre_xy, radius, z_min, z_max = can
    n = len(start_m)
    lo, hi = np.zeros(n), np.broadcast_to(np.asarray(length_m, dtype=np.float64), (n,)).copy()
    if abs(direction[2]) > 1e-12:  # the path's parameter range between the can's end caps
        s1, s2 = (z_min - start_m[:, 2]) / direction[2], (z_max - start_m[:, 2]) / direction[2]
        lo, hi = np.maximum(lo, np.minimum(s1, s2)), np.minimum(hi, np.maximum(s1, s2))
    else:
        hi = np.where((start_m[:, 2] >= z_min) & (start_m[:, 2] <= z_max), hi, -1.0)
    a = direction[0] ** 2 + direction[1] ** 2  # |xy(start + s dir) - centre|^2 <= radius^2: a s^2 + b s + c <= 0
    p = start_m[:, :2] - centre_xy
    c = np.einsum("ij,ij->i", p, p) - radius**2
    if a > 1e-12:
        b = 2.0 * (p @ direction[:2])
        disc = b**2 - 4.0 * a * c
        root = np.sqrt(np.clip(disc, 0.0, None))
        lo = np.maximum(lo, (-b - root) / (2.0 * a))
        hi = np.where(disc >= 0.0, np.minimum(hi, (-b + root) / (2.0 * a)), -1.0)
    else:
        hi = np.where(c <= 0.0, hi, -1.0)
    return lo, hi


def path_crosses_can(start_m: np.ndarray, direction: np.ndarray, length_m: float, can: tuple) -> np.ndarray:
    """For each start point (N, 3): does the segment [start, start + length * direction] enter the can?"""
    lo, hi = path_interval_in_can(start_m, direction, length_m, can)
    return lo <= hi


def sample_vertex_reaching_can_m(rng: np.random.Generator, detector: Detector, config: EventConfig,
                                 muon_dir: np.ndarray, muon_range_m: float) -> np.ndarray:
    """A vertex uniform in space among those whose muon reaches the can before it stops (as gSeaGen generates
    in a volume grown by the muon range): uniform in a box around the can and the can moved back by the range,
    rejecting vertices whose muon path misses the can."""
    can = can_m(detector, config)
    centre_xy, radius, z_min, z_max = can
    can_lo = np.array([centre_xy[0] - radius, centre_xy[1] - radius, z_min])
    can_hi = np.array([centre_xy[0] + radius, centre_xy[1] + radius, z_max])
    back = -muon_range_m * np.asarray(muon_dir)
    box_lo, box_hi = np.minimum(can_lo, can_lo + back), np.maximum(can_hi, can_hi + back)
    while True:
        candidates = rng.uniform(box_lo, box_hi, size=(256, 3))
        crosses = path_crosses_can(candidates, muon_dir, muon_range_m, can)
        if crosses.any():
            return candidates[int(np.argmax(crosses))]


def expected_track_light(detector: Detector, config: EventConfig, vertex_m: np.ndarray, direction: np.ndarray,
                         muon_energy_gev: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected photo-electrons, direct arrival time (ns after the vertex) and photon path (m) per PMT."""
    range_m = float(physics.muon_range_m(muon_energy_gev, config.muon_energy_loss))
    _, rho_m, emission_m = physics.track_geometry(detector.pmt_pos_m, vertex_m, direction)
    emitted = (emission_m >= 0.0) & (emission_m <= range_m)
    emission_point = vertex_m + emission_m[:, None] * direction
    if config.seabed_z_m is not None:  # a muon in the rock gives no light
        emitted &= emission_point[:, 2] >= config.seabed_z_m
    photon = detector.pmt_pos_m - emission_point
    path_m = np.linalg.norm(photon, axis=1)
    photon /= np.maximum(path_m, 1e-9)[:, None]
    cos_incidence = -np.sum(detector.pmt_dir * photon, axis=1)
    energy_at_emission = physics.muon_energy_at_gev(muon_energy_gev, np.clip(emission_m, 0.0, None),
                                                    config.muon_energy_loss)
    if config.muon_light == "cone":
        photons_per_m = physics.muon_photons_per_m(energy_at_emission)
    else:  # the bare muon; its losses shine as showers (muon_loss_light)
        photons_per_m = np.where(energy_at_emission > 0.0, physics.MUON_PHOTONS_PER_M, 0.0)
    # Photons of one metre of track spread over a cone band of circumference 2 pi rho and width sin(theta_c);
    # rho is floored at 1 m so a PMT grazing the track does not see a divergent flux.
    flux_per_m2 = photons_per_m / (2.0 * np.pi * np.maximum(rho_m, 1.0) * physics.SIN_CHERENKOV)
    npe = (flux_per_m2 * config.pmt_area_m2 * config.quantum_efficiency
           * pmt_acceptance(cos_incidence, config.pmt_acceptance_min_cos)
           * np.exp(-path_m / config.absorption_length_m) * emitted)
    time_ns = physics.cherenkov_arrival_time_ns(detector.pmt_pos_m, vertex_m, direction, 0.0)
    return npe, time_ns, path_m


def muon_loss_showers(detector: Detector, config: EventConfig, vertex_m: np.ndarray, direction: np.ndarray,
                      muon_energy_gev: float, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The muon's energy losses that shine as EM showers (muon_light=cone_and_showers): distance along the track
    (m) and equivalent EM-shower energy (GeV) of each. Delta rays and pair production are continuous, one source per
    step; bremsstrahlung and photonuclear losses above stochastic_loss_min_gev are sampled with dN/dv = k / v per
    metre in v = loss / E (k = b (1 - pair share), so their mean is b (1 - pair share) E), each at a uniform point of
    its step; the energy they carry below the cut, k E_min, joins the continuous part. The muon's energy along the
    track stays the mean loss's (physics.muon_energy_at_gev). Also returns the muon's own Cherenkov light per source
    as equivalent EM-shower energy (the step's length over 4.7 m/GeV while the muon moves; 0 for the discrete
    losses), for the light that scatters (scattered_light_fraction)."""
    centre_xy, radius, z_min, z_max = detector.bounding_cylinder_m()
    reach = config.muon_light_reach_m
    z_low = z_min - reach if config.seabed_z_m is None else max(z_min - reach, config.seabed_z_m)
    range_m = float(physics.muon_range_m(muon_energy_gev, config.muon_energy_loss))
    lo, hi = path_interval_in_can(vertex_m[None], direction, range_m, (centre_xy, radius + reach, z_low, z_max + reach))
    lo, hi = float(lo[0]), float(hi[0])
    if hi <= lo:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    n_steps = int(np.ceil((hi - lo) / config.muon_light_step_m))
    step_m = (hi - lo) / n_steps
    start_m = lo + step_m * np.arange(n_steps)
    energy = physics.muon_energy_at_gev(muon_energy_gev, start_m + 0.5 * step_m, config.muon_energy_loss)
    e_min = config.stochastic_loss_min_gev
    k = physics.MUON_DEDX_B_PER_M * (1.0 - physics.PAIR_PRODUCTION_SHARE)
    continuous_gev = step_m * (physics.delta_ray_shower_energy_gev_per_m(energy)
                               + physics.MUON_DEDX_B_PER_M * physics.PAIR_PRODUCTION_SHARE * energy
                               + k * np.minimum(energy, e_min))
    n_losses = rng.poisson(k * step_m * np.log(np.maximum(energy, e_min) / e_min))
    step_of_loss = np.repeat(np.arange(n_steps), n_losses)
    loss_at_m = start_m[step_of_loss] + step_m * rng.random(len(step_of_loss))
    loss_gev = e_min * (energy[step_of_loss] / e_min) ** rng.random(len(step_of_loss))
    muon_gev = np.where(energy > 0.0, step_m / physics.SHOWER_TRACK_LENGTH_M_PER_GEV, 0.0)
    return (np.concatenate([start_m + 0.5 * step_m, loss_at_m]), np.concatenate([continuous_gev, loss_gev]),
            np.concatenate([muon_gev, np.zeros(len(loss_gev))]))


def muon_loss_light(detector: Detector, config: EventConfig, vertex_m: np.ndarray, direction: np.ndarray,
                    along_m: np.ndarray, emissions: list[tuple[np.ndarray, bool]]
                    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """Expected photo-electrons of sources on the muon's track (muon_loss_showers) on the PMTs of every DOM within
    muon_light_reach_m of them: (PMT index, npe per emission, arrival time (ns after the vertex; the muon moves at
    c), photon path (m)) per (source, PMT) pair. Each emission is (equivalent EM-shower energy per source (GeV),
    isotropic): isotropic sources shine the same in every direction (scattered light), the others with
    shower_angular_pdf around the muon; the emissions share one geometry. Flux and angle are taken at the DOM's
    centre, a PMT's path corrected to first order in its 0.2 m offset from it: a 31x smaller table than per PMT,
    and within 0.5 ns."""
    centre, rows, offset = detector.dom_tables
    source = vertex_m + along_m[:, None] * direction  # (S, 3)
    to_dom = centre[None, :, :] - source[:, None, :]  # (S, D, 3)
    dist2 = np.einsum("sdi,sdi->sd", to_dom, to_dom)
    source_of, dom_of = np.nonzero(dist2 < config.muon_light_reach_m**2)
    path_m = np.maximum(np.sqrt(dist2[source_of, dom_of]), 0.5)
    photon = to_dom[source_of, dom_of] / path_m[:, None]
    pmt_of = rows[dom_of]  # (pairs, K)
    real = pmt_of >= 0
    acceptance = pmt_acceptance(-np.einsum("nki,ni->nk", detector.pmt_dir[pmt_of], photon),
                                config.pmt_acceptance_min_cos)
    npe = []
    for shower_gev, isotropic in emissions:
        n_photons = shower_gev[source_of] * physics.SHOWER_TRACK_LENGTH_M_PER_GEV * physics.MUON_PHOTONS_PER_M
        angular_pdf = 0.5 if isotropic else shower_angular_pdf(photon @ direction, config.shower_angular_width,
                                                               config.shower_isotropic_fraction)
        per_solid_angle = n_photons * angular_pdf / (2.0 * np.pi)
        npe_per_acceptance = (per_solid_angle / path_m**2 * config.pmt_area_m2 * config.quantum_efficiency
                              * np.exp(-path_m / config.absorption_length_m))
        npe.append((npe_per_acceptance[:, None] * acceptance)[real])
    path_m = path_m[:, None] + np.einsum("nki,ni->nk", offset[dom_of], photon)
    time_ns = (along_m[source_of] / physics.C_LIGHT_M_PER_NS)[:, None] + path_m / physics.V_GROUP_M_PER_NS
    return pmt_of[real], npe, time_ns[real], path_m[real]


def expected_shower_light(detector: Detector, config: EventConfig, vertex_m: np.ndarray, direction: np.ndarray,
                          shower_energy_gev: float | np.ndarray, light_fraction: float
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected photo-electrons, arrival time and photon path per PMT for a point-like shower at the vertex; with
    vertices (S, 3) and energies (S,), for S points at once (arrays (S, n_pmt))."""
    photon = detector.pmt_pos_m - vertex_m[..., None, :]
    path_m = np.maximum(np.linalg.norm(photon, axis=-1), 0.5)
    photon /= path_m[..., None]
    n_photons = (np.asarray(shower_energy_gev)[..., None] * physics.SHOWER_TRACK_LENGTH_M_PER_GEV
                 * physics.MUON_PHOTONS_PER_M * light_fraction)
    per_solid_angle = n_photons * shower_angular_pdf(photon @ direction, config.shower_angular_width,
                                                     config.shower_isotropic_fraction) / (2.0 * np.pi)
    cos_incidence = -np.sum(detector.pmt_dir * photon, axis=-1)
    npe = (per_solid_angle / path_m**2 * config.pmt_area_m2 * config.quantum_efficiency
           * pmt_acceptance(cos_incidence, config.pmt_acceptance_min_cos)
           * np.exp(-path_m / config.absorption_length_m))
    if config.seabed_z_m is not None:  # a shower in the rock: no light
        npe = np.where(vertex_m[..., 2, None] < config.seabed_z_m, 0.0, npe)
    return npe, path_m / physics.V_GROUP_M_PER_NS, path_m


def shower_light_source(detector: Detector, config: EventConfig, vertex_m: np.ndarray, direction: np.ndarray,
                        shower_energy_gev: float, light_fraction: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """A shower's light as a source of simulate_event: (PMT index, expected photo-electrons, arrival time (ns after
    the interaction), photon path, mean extra delay), one entry per (emission point, PMT). The points: the vertex
    (shower_profile=point), or points along the axis with the profile's share of the energy, reached at c by the
    shower front."""
    if config.shower_profile == "point" or shower_energy_gev <= 0.0:
        along_m, share = np.zeros(1), np.ones(1)
    else:
        along_m, share = physics.em_shower_profile(shower_energy_gev, config.shower_profile_step_m)
    npe, time_ns, path_m = expected_shower_light(detector, config, vertex_m + along_m[:, None] * direction, direction,
                                                 share * shower_energy_gev, light_fraction)
    time_ns = time_ns + (along_m / physics.C_LIGHT_M_PER_NS)[:, None]
    return np.tile(np.arange(detector.n_pmts), len(along_m)), npe.ravel(), time_ns.ravel(), path_m.ravel(), 0.0


def photons_to_hits(pmt_index: np.ndarray, time_ns: np.ndarray, config: EventConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge photo-electrons per PMT into hits: (pmt index, first-photon time, time over threshold)."""
    if len(pmt_index) == 0:
        return pmt_index, time_ns, np.zeros(0)
    order = np.lexsort((time_ns, pmt_index))
    pmt_index, time_ns = pmt_index[order], time_ns[order]
    new_hit = np.ones(len(order), dtype=bool)
    new_hit[1:] = (pmt_index[1:] != pmt_index[:-1]) | (np.diff(time_ns) > config.hit_merge_window_ns)
    starts = np.flatnonzero(new_hit)
    charge_pe = np.diff(np.append(starts, len(order)))
    tot = config.tot_1pe_ns + config.tot_log_slope_ns * np.log(charge_pe) + rng.normal(0, config.tot_spread_ns,
                                                                                        len(starts))
    return pmt_index[starts], time_ns[starts], np.clip(tot, 1.0, 255.0)


def simulate_event(detector: Detector, config: EventConfig, rng: np.random.Generator) -> Event | None:
    """One interaction or atmospheric muon bundle; None when it does not pass the trigger."""
    if config.atmospheric_muon_fraction > 0.0 and rng.random() < config.atmospheric_muon_fraction:
        return simulate_atmospheric_muon_event(detector, config, rng)
    is_track = rng.random() < config.numu_cc_fraction
    kind = "numu_cc" if is_track else config.shower_interaction
    energy_gev = sample_energy_gev(rng, config)
    direction = sample_direction(rng, config)
    if config.vertex_sampling == "can":  # drawn before the interaction, as the former model did
        vertex_m = sample_vertex_m(rng, detector, config)
    # the outgoing lepton: the muon of nu_mu CC, the electron of nu_e CC (in NC the unseen neutrino)
    lepton_dir, shower_dir, bjorken_x = direction, direction, np.nan
    if kind == "total_energy":
        y = 1.0
    elif config.kinematics == "dis":  # for nu_e CC and NC the lepton takes the muon's place (SHOWER_INTERACTIONS)
        interaction = dis.sample_interaction(rng, energy_gev, direction)
        y, bjorken_x = interaction.y, interaction.x
        lepton_dir, shower_dir = interaction.muon_direction, interaction.hadron_direction
    else:  # collinear: Bjorken y flat on [0, 1], lepton and shower along the neutrino
        y = rng.random()
    lepton_energy, shower_energy = (1.0 - y) * energy_gev, y * energy_gev
    if config.vertex_sampling == "muon_range":
        reach_m = float(physics.muon_range_m(lepton_energy, config.muon_energy_loss)) if is_track else 0.0
        vertex_m = sample_vertex_reaching_can_m(rng, detector, config, lepton_dir, reach_m)
    # (PMT of each entry, expected photo-electrons, direct arrival time, photon path, mean extra delay) per source
    # total_energy: the whole energy in one EM shower along the neutrino (y = 1); otherwise the hadrons' shower
    light_fraction = 1.0 if kind == "total_energy" else config.hadronic_light_fraction
    sources = [shower_light_source(detector, config, vertex_m, shower_dir, shower_energy, light_fraction)]
    if kind == "nue_cc":  # the electron's EM shower, where nu_mu CC has its muon
        sources.append(shower_light_source(detector, config, vertex_m, lepton_dir, lepton_energy, 1.0))
    if is_track:
        sources.extend(muon_light_sources(detector, config, vertex_m, lepton_dir, lepton_energy, rng))
    event = detector_response(detector, config, sources, rng)
    if event is None:
        return None
    hits, truth = event
    truth["dir_x"], truth["dir_y"], truth["dir_z"] = direction
    truth["energy_gev"], truth["log10_energy"] = energy_gev, np.log10(energy_gev)
    truth["vertex_x"], truth["vertex_y"], truth["vertex_z"] = vertex_m
    truth["event_type"] = EVENT_TYPES["shower" if kind == "total_energy" else kind]
    truth["muon_energy_gev"] = lepton_energy if is_track else 0.0
    # the visible shower energy: the hadrons' y E, plus the electron's (1 - y) E in nu_e CC (NC's neutrino is unseen)
    truth["shower_energy_gev"] = shower_energy + (lepton_energy if kind == "nue_cc" else 0.0)
    truth["muon_range_m"] = float(physics.muon_range_m(lepton_energy, config.muon_energy_loss)) if is_track else 0.0
    if is_track:
        truth["muon_dir_x"], truth["muon_dir_y"], truth["muon_dir_z"] = lepton_dir
    truth["bjorken_x"], truth["bjorken_y"] = bjorken_x, np.nan if kind == "total_energy" else y
    truth["n_muons"] = int(is_track)
    return Event(hits, truth)


def muon_light_sources(detector: Detector, config: EventConfig, start_m: np.ndarray, direction: np.ndarray,
                       energy_gev: float, rng: np.random.Generator, time_offset_ns: float = 0.0) -> list[tuple]:
    """A muon's light as sources of detector_response, from `start_m` on (its cone, and with
    muon_light=cone_and_showers its losses' showers and their scattered light), `time_offset_ns` after the event's
    time zero."""
    unscattered = 1.0 - config.scattered_light_fraction
    npe, time_ns, path_m = expected_track_light(detector, config, start_m, direction, energy_gev)
    sources = [(np.arange(detector.n_pmts), npe * unscattered, time_ns + time_offset_ns, path_m, 0.0)]
    if config.muon_light == "cone_and_showers":
        along_m, shower_gev, muon_gev = muon_loss_showers(detector, config, start_m, direction, energy_gev, rng)
        emissions = [(shower_gev, False)]
        if config.scattered_light_fraction > 0.0:
            emissions.append((config.scattered_light_fraction * (shower_gev + muon_gev), True))
        pmt_of, npe, time_ns, path_m = muon_loss_light(detector, config, start_m, direction, along_m, emissions)
        time_ns = time_ns + time_offset_ns
        sources.append((pmt_of, npe[0] * unscattered, time_ns, path_m, 0.0))
        if config.scattered_light_fraction > 0.0:
            sources.append((pmt_of, npe[1], time_ns, path_m, config.scattered_light_delay_ns))
    return sources


def simulate_atmospheric_muon_event(detector: Detector, config: EventConfig, rng: np.random.Generator
                                    ) -> Event | None:
    """One atmospheric muon bundle (numl.sim.km3net.atmospheric, MUPAGE's parametrisation) crossing the can; None when
    it does not pass the trigger. Truth: the bundle's axis and the energy its muons carry into the can."""
    bundle = atmospheric_bundle_generator(detector, config).sample(rng, 1, batch=ATMOSPHERIC_PROPOSAL_BATCH)
    axis = bundle.bundles["direction"][0]
    muons = bundle.muons
    sources = []
    for start_m, energy_gev, time_ns in zip(muons["entry_m"], muons["energy_gev"], muons["time_ns"], strict=True):
        sources.extend(muon_light_sources(detector, config, start_m, axis, float(energy_gev), rng, float(time_ns)))
    event = detector_response(detector, config, sources, rng)
    if event is None:
        return None
    hits, truth = event
    bundle_energy = float(bundle.bundles["bundle_energy_gev"][0])
    truth["dir_x"], truth["dir_y"], truth["dir_z"] = axis
    truth["energy_gev"], truth["log10_energy"] = bundle_energy, np.log10(bundle_energy)
    truth["vertex_x"], truth["vertex_y"], truth["vertex_z"] = bundle.bundles["axis_point"][0]
    truth["event_type"] = EVENT_TYPES["atmospheric_muon"]
    truth["muon_energy_gev"] = bundle_energy
    truth["muon_range_m"] = float(physics.muon_range_m(muons["energy_gev"].max(), config.muon_energy_loss))
    truth["muon_dir_x"], truth["muon_dir_y"], truth["muon_dir_z"] = axis
    truth["bjorken_x"], truth["bjorken_y"] = np.nan, np.nan
    truth["n_muons"] = len(muons["energy_gev"])
    return Event(hits, truth)


def atmospheric_bundle_generator(detector: Detector, config: EventConfig) -> BundleGenerator:
    """Bundles cross the event can; the seabed (data.events.seabed_z_m, else the can's bottom) lies
    atmospheric_seabed_depth_m below the sea surface."""
    centre_xy, radius, z_min, z_max = can_m(detector, config)
    seabed_z = z_min if config.seabed_z_m is None else config.seabed_z_m
    return BundleGenerator((float(centre_xy[0]), float(centre_xy[1])), radius, z_min, z_max,
                           config.atmospheric_seabed_depth_m, seabed_z, config.atmospheric_bundle_energy_min_gev,
                           config.atmospheric_multiplicity_max)


def detector_response(detector: Detector, config: EventConfig, sources: list[tuple], rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """Hits of the light sources (PMT of each entry, expected photo-electrons, direct arrival time, photon path, mean
    extra delay) with K-40 noise, trigger and readout window: (hits, truth with the vertex time and the number of
    signal hits set); None when nothing triggers."""
    pmt_list, t_list = [], []
    for pmt_of, npe, time_ns, path_m, extra_delay_ns in sources:
        counts = rng.poisson(npe)
        entry = np.repeat(np.arange(len(npe)), counts)
        pmt, path = pmt_of[entry], path_m[entry]
        t = time_ns[entry] + rng.normal(0.0, config.time_spread_ns, len(pmt))
        if extra_delay_ns > 0.0:
            t += rng.exponential(extra_delay_ns, len(pmt))
        scattered = rng.random(len(pmt)) > np.exp(-path / config.scattering_length_m)
        t[scattered] += rng.exponential(config.scattering_delay_ns_per_m * path[scattered])
        pmt_list.append(pmt)
        t_list.append(t)
    signal_pmt, signal_t, signal_tot = photons_to_hits(np.concatenate(pmt_list), np.concatenate(t_list), config, rng)
    if len(signal_t) < 2:
        return None

    # K-40 over the signal span plus the readout margins (a superset of the readout window).
    noise_start = signal_t.min() - config.readout_margin_ns
    noise_end = signal_t.max() + config.readout_margin_ns
    noise_pmt, noise_t, noise_tot = k40_hits(detector, config, rng, noise_start, noise_end)
    n_noise = len(noise_t)

    pmt = np.concatenate([signal_pmt, noise_pmt])
    t = np.concatenate([signal_t, noise_t])
    triggered = trigger_flags(detector.pmt_pos_m[pmt], t, detector.dom_index[pmt], config)
    if triggered is None:
        return None
    start = max(t[triggered].min() - config.readout_margin_ns, noise_start)
    end = min(t[triggered].max() + config.readout_margin_ns, noise_end)
    keep = (t >= start) & (t <= end)
    is_signal = np.concatenate([np.ones(len(signal_t), np.int8), np.zeros(n_noise, np.int8)])

    order = np.argsort(t[keep], kind="stable")
    hits = np.zeros(int(keep.sum()), dtype=HIT_DTYPE)
    kept_pmt = pmt[keep][order]
    for axis, name in enumerate("xyz"):
        hits[f"pos_{name}"] = detector.pmt_pos_m[kept_pmt, axis]
        hits[f"dir_{name}"] = detector.pmt_dir[kept_pmt, axis]
    hits["t_ns"] = t[keep][order]
    hits["tot_ns"] = np.concatenate([signal_tot, noise_tot])[keep][order]
    hits["dom_id"] = detector.dom_id[kept_pmt]
    hits["du_id"] = detector.du_id[kept_pmt]
    hits["channel_id"] = detector.channel_id[kept_pmt]
    hits["triggered"] = triggered[keep][order]
    hits["is_signal"] = is_signal[keep][order]

    truth = np.zeros((), dtype=TRUTH_DTYPE)
    truth["vertex_time_ns"] = 0.0
    truth["n_signal_hits"] = int((hits["is_signal"] == 1).sum())
    return hits, truth


def k40_singles_rate_hz(detector: Detector, config: EventConfig) -> float:
    """Uncorrelated K-40 rate per PMT: noise_rate_hz less the PMT's mean share of the genuine coincidences."""
    if config.k40_coincidence_scale == 0.0:
        return config.noise_rate_hz
    pair_rate_hz = config.k40_coincidence_scale * detector.k40_pair_cumulative_rate_hz[-1]
    singles_hz = config.noise_rate_hz - 2.0 * pair_rate_hz / detector.n_pmts
    if singles_hz < 0.0:
        raise ConfigError(f"data.events.k40_coincidence_scale={config.k40_coincidence_scale}: its coincidences alone "
                          f"exceed data.events.noise_rate_hz={config.noise_rate_hz} per PMT")
    return singles_hz


def k40_hits(detector: Detector, config: EventConfig, rng: np.random.Generator, start_ns: float,
             end_ns: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K-40 hits in [start_ns, end_ns): (PMT rows, times, ToT) of uncorrelated singles and, with
    k40_coincidence_scale > 0, of genuine twofold coincidences (one photo-electron each)."""
    duration_ns = end_ns - start_ns
    n_singles = rng.poisson(detector.n_pmts * k40_singles_rate_hz(detector, config) * 1e-9 * duration_ns)
    pmt = rng.integers(0, detector.n_pmts, n_singles)
    t = rng.uniform(start_ns, end_ns, n_singles)
    tot = rng.normal(0, config.tot_spread_ns, n_singles)
    if config.k40_coincidence_scale > 0.0:
        first, second, _ = detector.dom_pmt_pairs
        cumulative_hz = detector.k40_pair_cumulative_rate_hz
        n_pairs = rng.poisson(config.k40_coincidence_scale * cumulative_hz[-1] * 1e-9 * duration_ns)
        pair = np.minimum(np.searchsorted(cumulative_hz, rng.random(n_pairs) * cumulative_hz[-1], side="right"),
                          len(cumulative_hz) - 1)
        decay_t = rng.uniform(start_ns, end_ns, n_pairs)
        pmt = np.concatenate([pmt, first[pair], second[pair]])
        t = np.concatenate([t, np.tile(decay_t, 2) + rng.normal(0.0, config.time_spread_ns, 2 * n_pairs)])
        tot = np.concatenate([tot, rng.normal(0, config.tot_spread_ns, 2 * n_pairs)])
    return pmt, t, np.clip(config.tot_1pe_ns + tot, 1.0, 255.0)


def simulate_events(detector: Detector, config: EventConfig, n_events: int, seed: int | np.random.SeedSequence,
                    progress: bool = False) -> tuple[list[Event], int]:
    """`n_events` triggered events from one seed; also returns the number of interactions generated."""
    check_positive("n_events", n_events, integer=True)
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    n_generated = 0
    iterator = range(n_events)
    if progress:
        iterator = track(iterator, description=f"simulating {n_events} KM3NeT events")
    for _ in iterator:
        for _trial in range(config.max_trials):
            n_generated += 1
            event = simulate_event(detector, config, rng)
            if event is not None:
                events.append(event)
                break
        else:
            raise ConfigError(f"data.events.max_trials={config.max_trials}: no event passed the trigger; lower "
                              "data.events.trigger_min_l1_doms or raise data.events.energy_min_gev")
    return events, n_generated
