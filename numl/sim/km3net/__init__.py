"""KM3NeT water-Cherenkov simulation: detector geometry, neutrino events with Cherenkov hits and K-40 noise."""

from numl.sim.km3net.detector import Detector, build_detector, generate_orca_like, read_detx
from numl.sim.km3net.events import (
    HIT_DTYPE,
    TRUTH_DTYPE,
    Event,
    EventConfig,
    simulate_event,
    simulate_events,
)

__all__ = ["Detector", "Event", "EventConfig", "HIT_DTYPE", "TRUTH_DTYPE", "build_detector", "generate_orca_like",
           "read_detx", "simulate_event", "simulate_events"]
