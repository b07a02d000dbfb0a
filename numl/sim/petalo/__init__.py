"""PETALO liquid-xenon PET simulator: 511 keV gamma transport, scintillation light, SiPM readout."""

from numl.sim.petalo.config import PetaloConfig
from numl.sim.petalo.simulate import EVENT_KEYS, simulate_events, wrap_angle

__all__ = ["EVENT_KEYS", "PetaloConfig", "simulate_events", "wrap_angle"]
