"""NEXT photon transport and gamma backgrounds (issue 15): XCOM cross sections to 3 MeV against Klein-Nishina and
the Born-approximation pair cross section, Compton and photoelectric kinematics, xenon K X-rays, energy
conservation, 208Tl / 214Bi events in the ROI, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from numl.sim.next import photons
from numl.sim.next.generator import (
    BACKGROUND_LINES_KEV,
    GAMMAS_PER_SLOT,
    SEGMENT_CLASSES,
    NextSimConfig,
    background_acceptance,
    in_energy_roi,
    simulate_batch,
    simulate_events,
    surface_gammas,
)
from numl.sim.petalo.xenon import BARN_TO_CM2_PER_G, cross_sections, klein_nishina_cm2_per_electron
from numl.utils.errors import ConfigError

ELECTRON_MASS_KEV = 510.99895
FINE_STRUCTURE = 1 / 137.035999
R_E_CM = 2.8179403262e-13
DENSITY = NextSimConfig().density_g_cm3
BIG_BOX = np.array([1e5, 1e5, 1e5])  # mm: everything is absorbed


@pytest.mark.parametrize("energy_kev", [1250.0, 1500.0, 2000.0, 2447.69, 2614.511, 3000.0])
def test_xcom_incoherent_is_klein_nishina_times_z_above_1_mev(energy_kev):
    # binding corrections (XCOM's incoherent scattering function) are below 0.5 % above 1 MeV
    kn = klein_nishina_cm2_per_electron(energy_kev) * 1e24 * 54 * BARN_TO_CM2_PER_G
    assert cross_sections(energy_kev).incoherent == pytest.approx(kn, rel=0.005)


def test_xcom_pair_production_against_the_born_approximation():
    """Maximon's (1968) expansion of the unscreened Bethe-Heitler (Born) pair cross section near threshold,
    (2 pi / 3) alpha Z^2 r_e^2 ((k-2)/k)^3 [1 + e/2 + 23 e^2/40 + 11 e^3/60 + 29 e^4/960]: XCOM lies above it by
    the Coulomb correction, positive near threshold for Z = 54 and falling with energy."""
    ratios = []
    for energy_kev in (2000.0, 2614.511, 3000.0):
        k = energy_kev / ELECTRON_MASS_KEV
        e = (2 * k - 4) / (2 + k + 2 * np.sqrt(2 * k))
        born_cm2 = (2 * np.pi / 3 * FINE_STRUCTURE * 54**2 * R_E_CM**2 * ((k - 2) / k) ** 3
                    * (1 + e / 2 + 23 / 40 * e**2 + 11 / 60 * e**3 + 29 / 960 * e**4))
        ratios.append(cross_sections(energy_kev).pair / (born_cm2 * 1e24 * BARN_TO_CM2_PER_G))
    assert all(1.0 < r < 1.35 for r in ratios)
    assert ratios == sorted(ratios, reverse=True)
    assert cross_sections(1000.0).pair == 0.0
    # 208Tl: about 15 % of the interactions make pairs (XCOM: 5.8e-3 of 3.78e-2 cm^2/g)
    xs = cross_sections(2614.511)
    assert xs.pair / xs.total_without_coherent == pytest.approx(0.154, abs=0.01)


def test_compton_electrons_follow_klein_nishina():
    """2.615 MeV photons through a 20 mm slab (0.7 % interact: the mean free path is 3 m at 15 bar; scattered
    photons interact again more rarely): Compton electrons below the edge 2 k E / (1 + 2 k), forward of the
    photon, with the Klein-Nishina mean kinetic energy (integrated here from the differential cross section);
    the processes in XCOM's proportions."""
    rng = np.random.default_rng(0)
    energy = 2614.511
    n = 400000
    slab = np.array([1e6, 1e6, 20.0])
    start = np.column_stack([np.full(n, 5e5), np.full(n, 5e5), np.zeros(n)])
    out = photons.transport_photons(rng, slab, DENSITY, start, np.tile([0.0, 0.0, 1.0], (n, 1)), np.full(n, energy),
                                    np.arange(n))
    k = energy / ELECTRON_MASS_KEV
    edge = energy * 2 * k / (1 + 2 * k)
    kev = out["electron_kev"]
    compton = ~out["electron_positron"] & (out["electron_pair"] < 0) & (kev < edge + 1e-6) & (kev > 50)

    def dsigma_dt(t):  # Klein-Nishina d sigma / d T per electron, up to a constant
        s = t / energy
        return 2 + s**2 / (k**2 * (1 - s) ** 2) + s / (1 - s) * (s - 2 / k)

    mean_t = quad(lambda t: t * dsigma_dt(t), 0, edge)[0] / quad(dsigma_dt, 0, edge)[0]
    assert compton.sum() > 1500
    assert kev[compton].max() <= edge * (1 + 1e-9)
    assert kev[compton].mean() == pytest.approx(mean_t, rel=0.03)
    # a Compton electron never goes backwards from its photon: all but the few from second interactions
    assert np.mean(out["electron_dir"][compton][:, 2] >= 0) > 0.97
    counts = out["counts"]
    xs = cross_sections(energy)
    interactions = counts["pair"] + counts["compton"] + counts["photoelectric"]
    assert counts["pair"] / interactions == pytest.approx(xs.pair / xs.total_without_coherent, abs=0.025)
    # energy: electrons + positrons' kinetic + 2 m c^2 per pair + local + escaped = what came in
    total = (kev.sum() + 2 * ELECTRON_MASS_KEV * counts["pair"] + out["local_kev"].sum() + out["escaped_kev"].sum())
    assert total == pytest.approx(energy * n, rel=1e-12)


def test_photoabsorption_makes_xenon_k_xrays_that_travel_centimetres():
    """100 keV photons: 0.833 x 0.889 = 0.74 of the photoabsorptions (XCOM K jump ratio 7073/1181 b, Krause's
    fluorescence yield 0.889) emit a K X-ray; a K-alpha (29.7 keV, below the K edge) is absorbed on the L shell
    after a mean free path of about 14 mm at 15 bar (XCOM 8.2 cm^2/g at 29.7 keV): a separate deposit."""
    rng = np.random.default_rng(1)
    n = 20000
    out = photons.transport_photons(rng, BIG_BOX, DENSITY, np.full((n, 3), 5e4), photons.isotropic(rng, n),
                                    np.full(n, 100.0), np.arange(n))
    assert photons.k_shell_fraction() == pytest.approx(1 - 1181 / 7073, rel=1e-6)
    kev, owner = out["electron_kev"], out["electron_owner"]
    # photoabsorptions above the K edge: all but the X-rays' own (on the L shell, below the edge)
    xray_absorbed = sum(np.isclose(kev, x - photons.L1_BINDING_KEV).sum() for x in (photons.K_ALPHA_KEV,
                                                                                   photons.K_BETA_KEV))
    above_edge = out["counts"]["photoelectric"] - xray_absorbed
    assert out["counts"]["k_xray"] / above_edge == pytest.approx(0.833 * 0.889, abs=0.02)
    # every photon ends absorbed: the energies add up (electrons + local deposits)
    assert out["electron_kev"].sum() + out["local_kev"].sum() == pytest.approx(100.0 * n, rel=1e-9)
    assert out["escaped_kev"].size == 0
    # photons absorbed at once on the K shell whose K-alpha was absorbed on the L shell: exactly two electrons,
    # of 100 - B_K and K_alpha - B_L1; their distance is the X-ray's path
    k_photo = np.isclose(kev, 100.0 - photons.K_BINDING_KEV)
    alpha = np.isclose(kev, photons.K_ALPHA_KEV - photons.L1_BINDING_KEV)
    two = np.bincount(owner, minlength=n) == 2
    sel = two & (np.bincount(owner[k_photo], minlength=n) == 1) & (np.bincount(owner[alpha], minlength=n) == 1)
    where_k = np.zeros((n, 3))
    where_k[owner[k_photo]] = out["electron_mm"][k_photo]
    where_alpha = np.zeros((n, 3))
    where_alpha[owner[alpha]] = out["electron_mm"][alpha]
    path = np.linalg.norm(where_alpha[sel] - where_k[sel], axis=1)
    assert sel.sum() > 3000
    assert path.mean() == pytest.approx(10.0 / (DENSITY * 8.2), rel=0.06)
    assert 10.0 < path.mean() < 20.0


def test_surface_gammas_enter_the_box_with_a_cosine_law():
    rng = np.random.default_rng(2)
    size = np.array([440.0, 440.0, 520.0])
    pos, d = surface_gammas(rng, size, 40000)
    on_face = np.isclose(pos, 0) | np.isclose(pos, size)
    assert np.all(on_face.sum(axis=1) >= 1)
    inward = np.where(np.isclose(pos, 0), 1.0, np.where(np.isclose(pos, size), -1.0, 0.0))
    cos_in = (d * inward).max(axis=1)
    assert np.all(cos_in > 0)
    assert cos_in.mean() == pytest.approx(2 / 3, abs=0.01)  # <cos> of the Lambert law


@pytest.fixture(scope="module")
def bi214_events():
    cfg = NextSimConfig(background="bi214")
    kept, n = background_acceptance(cfg, 8192, seed=3)
    return cfg, kept, n


def test_gamma_background_events_conserve_energy_and_land_in_the_roi(bi214_events):
    cfg, kept, n = bi214_events
    # 214Bi gammas entering the active volume: a few per thousand give a contained event in 2400-2520 keV
    assert 0.0005 < len(kept) / n < 0.01
    for event in kept:
        assert event.deposited_kev + event.escaped_kev == pytest.approx(2447.69, rel=1e-9)
        assert 2400 <= event.energy_kev <= 2520
        assert event.track_ends_mm.shape == (2, 3)
    # the photopeak: contained events sit at the line within the resolution (1 % FWHM)
    assert np.median([e.energy_kev for e in kept]) == pytest.approx(2447.69, abs=8)


def test_signal_and_gamma_events_are_labelled_and_seeded():
    cfg = NextSimConfig(events_per_batch=64)
    a, b = (simulate_events(cfg, 4, seed=6, labels=np.array([0, 1, 0, 1])) for _ in range(2))
    assert [e.label for e in a] == [0, 1, 0, 1]
    assert all(np.array_equal(x.voxel_energy_kev, y.voxel_energy_kev) for x, y in zip(a, b, strict=True))
    lines = BACKGROUND_LINES_KEV["mixed"]
    for event in a:
        total = event.deposited_kev + event.escaped_kev
        expected = [cfg.q_bb_kev] if event.label else lines
        assert min(abs(total - e) for e in expected) < 1e-6


def test_double_escape_sample_labels_pairs_whose_annihilation_photons_escaped():
    """NEXT-White's calibration sample: 208Tl gammas, events at the double-escape peak; pairs are signal-like."""
    cfg = NextSimConfig(sample="tl208_double_escape", energy_roi_kev=(1570.0, 1615.0), events_per_batch=64)
    rng = np.random.default_rng(4)
    events = [e for e in simulate_batch(cfg, rng, np.zeros(4 * GAMMAS_PER_SLOT * 64, np.int64))
              if in_energy_roi(cfg, e)]
    labels = np.array([e.label for e in events])
    escaped = np.array([e.escaped_kev for e in events])
    assert len(events) > 60 and 0.5 < labels.mean() < 1  # both kinds, pairs the larger part (about 0.9)
    for event in events:
        assert event.deposited_kev + event.escaped_kev == pytest.approx(2614.511, rel=1e-9)
    # at the peak both 511 keV photons left the detector: pairs lose 1022 keV (a soft bremsstrahlung photon more
    # at most), the others do not
    assert np.median(escaped[labels == 1]) == pytest.approx(2 * ELECTRON_MASS_KEV, abs=2)
    assert np.all(np.abs(escaped[labels == 0] - 2 * ELECTRON_MASS_KEV) > 1)
    peak = np.array([e.energy_kev for e in events])[labels == 1]
    sigma = 0.01 / 2.3548 * np.sqrt(cfg.q_bb_kev * 1592.5)  # 8.4 keV
    assert peak.mean() == pytest.approx(1592.5, abs=4 * sigma / np.sqrt(peak.size) + 2)


@pytest.mark.parametrize("values, key", [
    ({"sample": "tl208_single_escape"}, "sample"),
    ({"sample": "tl208_double_escape", "energy_roi_kev": [2400.0, 2520.0]}, "energy_roi_kev"),  # misses 1592.5
    ({"sample": "tl208_double_escape", "photon_transport": "first_interaction", "background": "electron"},
     "photon_transport"),
    ({"background": "co60"}, "background"),
    ({"photon_transport": "geant4"}, "photon_transport"),
    ({"photon_transport": "first_interaction"}, "photon_transport"),  # gammas need the photon transport
    ({"background": "bi214", "energy_roi_kev": [2500.0, 2600.0]}, "energy_roi_kev"),  # above the 2448 keV line
    ({"energy_roi_kev": [2700.0, 2800.0]}, "energy_roi_kev"),  # above Q_bb and both lines
    ({"energy_roi_kev": [-10.0, 2500.0]}, "energy_roi_kev"),
    ({"energy_roi_kev": [1570.0, 1615.0]}, "energy_roi_kev"),  # below the signal peak
    ({"veto_margin_mm": -1.0}, "veto_margin_mm"),
])
def test_bad_background_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=f"data.sim.{key}"):
        NextSimConfig.from_dict(values)


def test_bremsstrahlung_electrons_are_other_also_in_batches_without_gammas():
    """Only a gamma entering the detector makes main (track / blob) electrons. A batch of signal events alone
    once took its first bremsstrahlung photons for entering gammas and labelled their electrons track / blob:
    signal events then had "other" voxels 7 % of the time instead of about 20 % (seed 1)."""
    cfg = NextSimConfig(events_per_batch=64)
    other = SEGMENT_CLASSES.index("other")

    def with_other_voxels(labels):
        signal = [e for e in simulate_batch(cfg, np.random.default_rng(1), labels) if e.label == 1]
        return np.mean([np.any(e.voxel_segment == other) for e in signal])

    alone = with_other_voxels(np.ones(150, np.int64))
    beside_gammas = with_other_voxels(np.r_[np.ones(150, np.int64), np.zeros(64, np.int64)])
    assert alone > 0.15 and beside_gammas > 0.15
    assert alone == pytest.approx(beside_gammas, abs=0.08)
