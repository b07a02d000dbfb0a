"""NEXT toy Monte Carlo: 0vbb signal and single-electron background tracks in high-pressure xenon gas."""

from numl.sim.next.generator import SEGMENT_CLASSES, SIMULATOR_NAME, NextEvent, NextSimConfig, simulate_events

__all__ = ["SEGMENT_CLASSES", "SIMULATOR_NAME", "NextEvent", "NextSimConfig", "simulate_events"]
