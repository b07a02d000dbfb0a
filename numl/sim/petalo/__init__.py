"""PETALO liquid-xenon PET simulator: 511 keV gamma transport, scintillation light, SiPM readout."""

from numl.sim.petalo.config import PetaloConfig
from numl.sim.petalo.simulate import EVENT_KEYS, simulate_events, wrap_angle

#: the reconstructed interaction-point coordinates, in this order: radius, arc length r * phi, axial z (all mm)
COORDINATES = ("r", "rphi", "z")

__all__ = ["COORDINATES", "EVENT_KEYS", "PetaloConfig", "simulate_events", "wrap_angle"]
