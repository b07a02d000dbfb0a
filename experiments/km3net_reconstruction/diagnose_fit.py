"""Why does the chi-square fit degrade above 100 GeV? Refit badly reconstructed bright events from the true track.

    python experiments/km3net_reconstruction/diagnose_fit.py --run /tmp/studies/km3net_reconstruction/transformer

Reads a run of experiment=km3net_reconstruction/transformer: the fitted directions from its
test_predictions.npz (`baseline/track_fit/...`) and its test events, rebuilt by the run's own DataModule config
(the test events follow from the data seed alone; no training or validation events are made). For test events
above --min-log10e whose fit is off by more than --min-error-deg, the chi-square fit is rerun twice on the
triggered hits, from the fitted track and from the true track. If the refit from the truth ends at a cost no
lower than the wrong track's, the cost function itself prefers the wrong track (a likelihood problem, not a
minimiser problem).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf

from numl.data.km3net import hit_positions_m, truth_direction
from numl.sim.km3net.physics import angle_between_deg
from numl.sim.km3net.prefit import chi2_fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run directory with a track_fit baseline")
    parser.add_argument("--min-log10e", type=float, default=2.0)
    parser.add_argument("--min-error-deg", type=float, default=15.0)
    parser.add_argument("--max-events", type=int, default=25)
    args = parser.parse_args()
    cfg = OmegaConf.load(args.run / ".hydra" / "config.yaml")
    sigma_ns = cfg.baseline.track_fit.sigma_ns
    predictions = np.load(args.run / "test_predictions.npz")
    fitted_dir = predictions["baseline/track_fit/direction"]
    fit_error = predictions["baseline/track_fit/angular_error_deg"]
    datamodule = instantiate(cfg.data, n_train=1, n_val=1)
    datamodule.setup("test")
    test = datamodule.events("test")[: len(fit_error)]
    if not np.allclose([truth_direction(e.truth) for e in test], predictions["network/direction"][: len(test)]):
        raise SystemExit(f"{args.run}: the rebuilt test events differ from the run's (true directions)")
    true_log10e = np.array([float(e.truth["log10_energy"]) for e in test])
    chosen = np.flatnonzero((true_log10e > args.min_log10e) & (fit_error > args.min_error_deg))[: args.max_events]
    no_better, drift = 0, []
    for i in chosen:
        hits = test[i].hits[test[i].hits["triggered"]]
        pos, t_ref = hit_positions_m(hits), float(hits["t_ns"].mean())
        t = hits["t_ns"] - t_ref
        truth = test[i].truth
        true_dir = truth_direction(truth)
        if "muon_dir_x" in truth.dtype.names:  # the track is the muon (DIS kinematics: off the neutrino)
            true_dir = np.array([float(truth[f"muon_dir_{a}"]) for a in "xyz"])
        vertex = np.array([float(truth[f"vertex_{a}"]) for a in "xyz"])
        t_vertex = float(truth["vertex_time_ns"]) - t_ref
        # both refits on the triggered hits from the same start point, so their costs compare like for like
        *_, cost_fit = chi2_fit(pos, t, fitted_dir[i], vertex, t_vertex, sigma_ns)
        from_truth, *_, cost_truth = chi2_fit(pos, t, true_dir, vertex, t_vertex, sigma_ns)
        no_better += cost_truth >= cost_fit - 1e-6 * abs(cost_fit)
        drift.append(float(angle_between_deg(from_truth[None], true_dir[None])[0]))
        print(f"E = {10 ** true_log10e[i]:5.0f} GeV, {len(hits):4d} triggered hits: fit error {fit_error[i]:5.1f} deg, "
              f"cost {cost_fit:8.1f}; refit from the truth: cost {cost_truth:8.1f}, error {drift[-1]:5.1f} deg")
    print(f"\n{no_better} of {len(chosen)} refits from the true track end at a cost no lower than the wrong fit's; "
          f"they drift a median {np.median(drift):.1f} deg from the truth")


if __name__ == "__main__":
    main()
