"""Benchmark: Richardson-Lucy deconvolution of NEXT hits, numl's iteration against scikit-image's, side by side.

The deconvolution inputs (hit image on the voxel grid, transverse and longitudinal kernel) of N simulated events
(mixed gamma background and 0vbb at Q_bb, sensor response) are recorded once; each implementation then deconvolves
the same inputs with the same iterations on the same thread(s):
- scikit-image (skimage.restoration.richardson_lucy) with the 3D kernel, float64: what numl used before;
- numl.sim.next.response.richardson_lucy in float64 (the default) and float32 (data=next_2mm_deconvolved).
Printed and written (results/deconvolution_speed.md, .json): seconds per deconvolution for each (the simulation
deconvolves some events that it then leaves out, so there are more deconvolutions than events), the ratio to
scikit-image, and the agreement (largest difference relative to the event's maximum; cells that cross the
deconvolution_cut, or --deconvolution-cut). Run on an idle machine with one thread:

    OMP_NUM_THREADS=1 python experiments/next_topology/deconvolution_speed.py --events 20
    # the table in the README: the 1 % cut both data configs had then (data=next_2mm_deconvolved now cuts at 0.1 %)
    OMP_NUM_THREADS=1 python experiments/next_topology/deconvolution_speed.py --events 20 --deconvolution-cut 0.01
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from numl.sim.next import generator as gen
from numl.sim.next import response

HERE = Path(__file__).resolve().parent
CONF = HERE.parents[1] / "conf"


def data_config(name: str) -> gen.NextSimConfig:
    """NextSimConfig of the study's sparse CNN with data=<name>, composed by Hydra as numl.train would."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=next_topology/sparse_cnn_10mm", f"data={name}"])
    return gen.NextSimConfig.from_dict(OmegaConf.to_container(cfg.data.sim, resolve=True))


def recorded_inputs(cfg: gen.NextSimConfig, n_events: int, seed: int) -> list[tuple]:
    """The (image, kernel_xy, kernel_z) that the simulation hands to the deconvolution, for n_events events."""
    inputs = []
    original = response.richardson_lucy

    def record(image, kernel_xy, kernel_z, *args, **kwargs):
        inputs.append((image.copy(), kernel_xy, kernel_z))
        return original(image, kernel_xy, kernel_z, *args, **kwargs)

    response.richardson_lucy = record
    try:
        gen.simulate_events(cfg, n_events, seed, labels=np.arange(n_events) % 2)
    finally:
        response.richardson_lucy = original
    return inputs


def time_each(inputs: list[tuple], iterations: int, cut: float) -> dict:
    from skimage.restoration import richardson_lucy as skimage_richardson_lucy

    methods = {
        "scikit-image, float64": lambda im, kxy, kz: skimage_richardson_lucy(
            im, kxy[:, :, None] * kz[None, None, :], num_iter=iterations, clip=False),
        "numl, float64": lambda im, kxy, kz: response.richardson_lucy(im, kxy, kz, iterations),
        "numl, float32": lambda im, kxy, kz: response.richardson_lucy(im, kxy, kz, iterations, precision="float32"),
    }
    seconds = {name: 0.0 for name in methods}
    worst = {name: 0.0 for name in methods}
    crossed = {name: 0 for name in methods}
    kept = 0
    for image, kernel_xy, kernel_z in inputs:
        results = {}
        for name, run in methods.items():  # interleaved per event: the same machine state for all three
            start = time.perf_counter()
            results[name] = run(image, kernel_xy, kernel_z)
            seconds[name] += time.perf_counter() - start
        reference = results["scikit-image, float64"]
        reference_kept = reference >= cut * reference.max()
        kept += int(reference_kept.sum())
        for name, result in results.items():
            worst[name] = max(worst[name], float(np.abs(result - reference).max() / reference.max()))
            crossed[name] += int(((result >= cut * result.max()) != reference_kept).sum())
    base = seconds["scikit-image, float64"]
    return {name: {"seconds_per_deconvolution": seconds[name] / len(inputs), "speed_up": base / seconds[name],
                   "largest_difference_over_max": worst[name], "cells_across_cut": crossed[name],
                   "cells_kept_by_reference": kept} for name in methods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20, help="events per voxel size")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "deconvolution_speed")
    parser.add_argument("--deconvolution-cut", type=float, default=None,
                        help="the cell cut the agreement is counted at (default: each data config's own)")
    args = parser.parse_args()
    rows, report = [], {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} torch thread(s)", "events": args.events}
    for name in ("next_deconvolved", "next_2mm_deconvolved"):
        cfg = data_config(name)
        inputs = recorded_inputs(cfg, args.events, args.seed)
        cells = float(np.mean([np.prod(image.shape) for image, _, _ in inputs]))
        print(f"data={name}: {len(inputs)} deconvolutions, {cells:.0f} cells per box on average", flush=True)
        cut = cfg.deconvolution_cut if args.deconvolution_cut is None else args.deconvolution_cut
        result = time_each(inputs, cfg.deconvolution_iterations, cut)
        report[name] = {"deconvolutions": len(inputs), "cells_per_box": cells, "methods": result}
        for method, r in result.items():
            rows.append(f"| {name} | {method} | {r['seconds_per_deconvolution']:.3f} | {r['speed_up']:.1f} | "
                        f"{r['largest_difference_over_max']:.1e} | {r['cells_across_cut']} of "
                        f"{r['cells_kept_by_reference']} |")
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    header = ("| data | deconvolution | s per deconvolution | speed-up vs scikit-image | largest difference / max "
              "| cells across the cut |\n|---|---|---|---|---|---|\n")
    args.out.with_suffix(".md").write_text(f"# Richardson-Lucy speed ({report['date']}, {report['machine']}, "
                                           f"{args.events} events per data set)\n\n{header}" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
