"""NEXT toy Monte Carlo: 0vbb signal and single-electron background tracks in high-pressure xenon gas."""

from numl.sim.next.generator import SEGMENT_CLASSES, SIMULATOR_NAME, NextEvent, NextSimConfig, simulate_events

#: voxel energies enter the networks in units of this many keV (numl.data.next builds the features; the
#: segmentation task turns them back into keV)
FEATURE_SCALE_KEV = 1000.0

__all__ = ["FEATURE_SCALE_KEV", "SEGMENT_CLASSES", "SIMULATOR_NAME", "NextEvent", "NextSimConfig", "simulate_events"]
