"""Geometry and physics parameters of the PETALO ring; every value is a `data.<key>` in conf/data/petalo.yaml."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from numl.utils.errors import ConfigError, check_keys, check_positive, check_range


@dataclass(frozen=True)
class PetaloConfig:
    # Ring geometry (petalo-project/petalosim defaults): LXe annulus between two SiPM-covered faces.
    inner_radius_mm: float = 150.0
    lxe_depth_mm: float = 50.0
    axial_length_mm: float = 64.0
    #: SiPM pitch on the inner face, in phi and z; the outer face has one SiPM per inner column, at the
    #: same phi, so both faces form aligned images (its phi pitch is larger by outer/inner radius).
    sipm_pitch_mm: float = 4.0
    #: active side of a square SiPM (assumption: 3.5 mm of each 4 mm pitch is sensitive)
    sipm_size_mm: float = 3.5
    # Liquid xenon at about 165 K.
    lxe_density_g_cm3: float = 2.95
    #: scintillation photons per keV at zero field (PHYSICS.md assumption; NEST gives up to ~60)
    light_yield_per_kev: float = 30.0
    #: SiPM photon detection efficiency at 175 nm (assumption)
    photon_detection_efficiency: float = 0.3
    #: LXe refractive index at 175 nm: scintillation light travels at c / n
    refractive_index: float = 1.69
    # Scintillation time profile: two exponentials (PHYSICS.md: 2.2 ns and 22 ns).
    fast_decay_ns: float = 2.2
    slow_decay_ns: float = 22.0
    #: fraction of photons in the fast component (assumption for electron recoils at zero field)
    fast_fraction: float = 0.3
    #: Gaussian single-photon time jitter of SiPM + electronics (assumption: 100 ps sigma)
    time_jitter_ns: float = 0.1
    # Source: positron annihilations uniform in a transverse disk of this radius, all axial positions.
    source_radius_mm: float = 100.0
    gamma_energy_kev: float = 511.0
    #: deposits farther than this from the first interaction make an event multi-site (one SiPM pitch)
    multi_site_distance_mm: float = 4.0
    #: SiPM columns in phi given to the networks, centred on the hottest SiPM
    window_columns: int = 24

    @property
    def outer_radius_mm(self) -> float:
        return self.inner_radius_mm + self.lxe_depth_mm

    @property
    def n_columns(self) -> int:
        return int(round(2 * math.pi * self.inner_radius_mm / self.sipm_pitch_mm))

    @property
    def n_rows(self) -> int:
        return int(round(self.axial_length_mm / self.sipm_pitch_mm))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_kwargs(cls, prefix: str = "data", **kwargs: Any) -> PetaloConfig:
        check_keys(prefix, kwargs, (f.name for f in fields(cls)))
        config = cls(**kwargs)
        config.validate(prefix)
        return config

    def validate(self, prefix: str = "data") -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("fast_fraction", "photon_detection_efficiency"):
                check_range(f"{prefix}.{f.name}", value, 0.0, 1.0)
            elif f.name == "window_columns":
                check_positive(f"{prefix}.{f.name}", value, integer=True)
            elif f.name == "time_jitter_ns":
                check_positive(f"{prefix}.{f.name}", value, allow_zero=True)
            else:
                check_positive(f"{prefix}.{f.name}", value)
        if self.sipm_size_mm > self.sipm_pitch_mm:
            raise ConfigError(
                f"{prefix}.sipm_size_mm={self.sipm_size_mm}: must be <= sipm_pitch_mm={self.sipm_pitch_mm}"
            )
        if self.source_radius_mm >= self.inner_radius_mm:
            raise ConfigError(f"{prefix}.source_radius_mm={self.source_radius_mm}: must be < inner_radius_mm")
        if self.n_rows < 1 or self.window_columns > self.n_columns:
            raise ConfigError(
                f"{prefix}.window_columns={self.window_columns}: must be <= {self.n_columns} SiPM columns"
            )
        if self.refractive_index < 1:
            raise ConfigError(f"{prefix}.refractive_index={self.refractive_index}: must be >= 1")
