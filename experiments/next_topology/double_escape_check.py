"""The 208Tl double-escape calibration sample (issue 15): numl's blob cut on the sample NEXT-White measured it on.

NEXT-White's published topology numbers on data are not 0vbb numbers: they come from 2614.5 keV 208Tl gammas of a
228Th source, events around the double-escape peak at 1592.5 keV, where e+e- pairs (two tracks from a vertex,
two blobs) stand in for 0vbb and the Compton / photoelectric events of the same energy for the background
(Ferrario et al. 2019, arXiv:1905.13141: the classical blob cut keeps 71.6 +- 1.5 % of the pairs and 20.6 +- 0.4 %
of the background, a rejection of 4.9x; Kekic et al. 2021, arXiv:2009.10783, the CNN on the same sample). This
script simulates that sample (`data.sim.sample=tl208_double_escape`, truth labels) and puts numl's blob cut
beside the published figure, with the same cut on numl's Q_bb sample (0vbb against 208Tl / 214Bi gammas) next to it.

1. The window: events per entering gamma, the pair fraction, the pairs' energy peak (mean, FWHM).
2. Topology, on n pair and n other events: the blob cut (numl.baselines.next, reconstructed ends, R = 18 mm) on
   all events and on single-track events only (NEXT's classical selection), rejection at 57 %, 65 %, 71.6 % and 72 %
   signal efficiency with Poisson errors; AUROC of the cut and of the smaller true-end blob.
3. The same for the 0vbb sample (`sample=bb0nu`, the study's default) with the same seed and size.

    python experiments/next_topology/double_escape_check.py --n 2000
    python experiments/next_topology/double_escape_check.py --n 500 --response sensors   # the sensor chain
    # the sensor chain with Richardson-Lucy deconvolution onto the 10 mm voxels, the cut also with IC's R = 21 mm
    python experiments/next_topology/double_escape_check.py --n 1000 --response sensors \
        --sim deconvolution=richardson_lucy --blob-radius 18,21

Writes results/double_escape_check[_<response>[_<key>-<value>...]].md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml
from background_check import topology

import numl.sim.next.generator as gen

OUT = Path(__file__).with_name("results")
#: NEXT's double-escape window: the peak +- 2.7 sigma of the 1 % FWHM (at Q_bb) resolution scaled as sqrt(E)
#: (sigma 8.4 keV at 1592.5 keV)
WINDOW_KEV = (1570.0, 1615.0)
#: Ferrario et al. 2019 (arXiv:1905.13141), NEXT-White data: signal efficiency and background acceptance of the
#: classical blob cut on the double-escape sample
PUBLISHED_EFFICIENCY = 0.716
PUBLISHED_ACCEPTANCE, PUBLISHED_ACCEPTANCE_ERROR = 0.206, 0.004
#: Simon et al. 2021 (arXiv:2102.11931), NEXT-White data reconstructed with Richardson-Lucy deconvolution: background
#: rejection 27 at 57 % signal efficiency (the abstract's figures; no error readable here). Ferrario et al.'s data
#: and Kekic et al.'s CNN (~10x at 65 %) were reconstructed without deconvolution.
DECONVOLVED_EFFICIENCY, DECONVOLVED_REJECTION = 0.57, 27.0
EFFICIENCIES = (DECONVOLVED_EFFICIENCY, 0.65, PUBLISHED_EFFICIENCY, 0.72)


def window(cfg: gen.NextSimConfig, n_gammas: int, seed: int) -> dict:
    """What lands in the window per entering gamma, with the natural pair fraction."""
    kept, _ = gen.background_acceptance(cfg, n_gammas, seed)
    pair_fraction = float(np.mean([e.label for e in kept]))
    return {"gammas": n_gammas, "in_window": len(kept), "per_gamma": len(kept) / n_gammas,
            "pair_fraction": pair_fraction,
            "pair_fraction_error": float(np.sqrt(pair_fraction * (1 - pair_fraction) / len(kept)))}


def sim_settings(pairs: list[str]) -> dict:
    """data.sim overrides KEY=VALUE, values read as YAML as Hydra reads them (false, 30, [1570, 1615]); an unknown
    key is a one-line error, and NextSimConfig checks the values."""
    known = {f.name for f in dataclasses.fields(gen.NextSimConfig)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in known:
            raise SystemExit(f"--sim {pair}: data.sim has no key {key!r}")
        out[key] = yaml.safe_load(value)
    return out


def table(de: dict, bb: dict, win: dict) -> str:
    def rej(r, key):
        value, error, k = r[key]
        return f"{value:.1f} +- {error:.1f} (k = {k})"

    published = 1 / PUBLISHED_ACCEPTANCE
    published_error = published * PUBLISHED_ACCEPTANCE_ERROR / PUBLISHED_ACCEPTANCE
    rows = [f"Window {WINDOW_KEV[0]:g}-{WINDOW_KEV[1]:g} keV: {win['in_window']} events from "
            f"{win['gammas']} entering 208Tl gammas ({win['per_gamma'] * 1e3:.2f} per 1000), pair fraction "
            f"{win['pair_fraction']:.2f} +- {win['pair_fraction_error']:.2f}; pair peak at "
            f"{de['signal_energy_mean_kev']:.1f} keV with FWHM {de['signal_energy_fwhm_kev']:.1f} keV.", "",
            "| quantity | double escape (e+e- vs other) | NEXT-White data, double escape | 0vbb vs gammas (Q_bb) |",
            "|---|---|---|---|"]
    for eff in EFFICIENCIES:
        tag = f"{eff * 100:g}"
        ref = {PUBLISHED_EFFICIENCY: f"{published:.2f} +- {published_error:.2f} (Ferrario et al. 2019)",
               DECONVOLVED_EFFICIENCY: f"{DECONVOLVED_REJECTION:g} (deconvolved, Simon et al. 2021)"}.get(eff, "")
        rows.append(f"| blob cut rejection at {tag} % signal efficiency | {rej(de, f'rejection_{tag}')} | {ref} | "
                    f"{rej(bb, f'rejection_{tag}')} |")
    for radius in de["by_radius"]:
        for eff in EFFICIENCIES:
            tag = f"{eff * 100:g}"
            ref = {PUBLISHED_EFFICIENCY: f"{published:.2f} +- {published_error:.2f}",
                   DECONVOLVED_EFFICIENCY: f"{DECONVOLVED_REJECTION:g} (deconvolved)"}.get(eff, "")
            rows.append(f"| blob cut with R = {radius} mm: rejection at {tag} % | "
                        f"{rej(de['by_radius'][radius], f'rejection_{tag}')} | {ref} | "
                        f"{rej(bb['by_radius'][radius], f'rejection_{tag}')} |")
    for eff in EFFICIENCIES:
        tag = f"{eff * 100:g}"
        rows.append(f"| single-track events, then blob cut: rejection at {tag} % | "
                    f"{rej(de, f'single_track_rejection_{tag}')} |  | {rej(bb, f'single_track_rejection_{tag}')} |")
    for name, key, fmt in (("blob cut AUROC", "blob_cut_auroc", "{:.3f}"),
                           *((f"blob cut AUROC, R = {r} mm", ("by_radius", r, "blob_cut_auroc"), "{:.3f}")
                             for r in de["by_radius"]),
                           ("smaller true-end blob AUROC", "true_end_blob_auroc", "{:.3f}"),
                           ("single-track fraction, signal", "single_track_signal", "{:.2f}"),
                           ("single-track fraction, background", "single_track_background", "{:.2f}"),
                           ("simulation speed, events/s in the window (one CPU thread)", "events_per_s", "{:.1f}")):
        def value(r, key=key):
            return r[key[0]][key[1]][key[2]] if isinstance(key, tuple) else r[key]

        rows.append(f"| {name} | {fmt.format(value(de))} |  | {fmt.format(value(bb))} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="test events per class")
    parser.add_argument("--gammas", type=int, default=200000, help="entering gammas for the window's composition")
    parser.add_argument("--response", default="ideal", choices=gen.DETECTOR_RESPONSES)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--sim", action="append", default=[], metavar="KEY=VALUE",
                        help="further data.sim settings (repeatable), e.g. deconvolution=richardson_lucy")
    parser.add_argument("--blob-radius", default="18", help="blob radii in mm, comma separated; the first is the "
                                                            "main table's, the others get rows of their own")
    args = parser.parse_args()
    extra = sim_settings(args.sim)
    radii = tuple(float(r) for r in args.blob_radius.split(","))
    common = {"detector_response": args.response, **extra}
    double_escape = {"sample": "tl208_double_escape", "energy_roi_kev": WINDOW_KEV, **common}
    win = window(gen.NextSimConfig(**double_escape), args.gammas, args.seed)
    print(f"window: {win}", flush=True)
    de = topology(double_escape, args.n, args.seed, efficiencies=EFFICIENCIES, progress=True, blob_radii_mm=radii)
    print(f"double escape: {de}", flush=True)
    bb = topology(common, args.n, args.seed, efficiencies=EFFICIENCIES, progress=True, blob_radii_mm=radii)
    print(f"0vbb: {bb}", flush=True)
    name = "double_escape_check" + ("" if args.response == "ideal" else f"_{args.response}") + "".join(
        f"_{k}-{'null' if v is None else v}" for k, v in extra.items())
    OUT.mkdir(exist_ok=True)
    text = table(de, bb, win)
    (OUT / f"{name}.md").write_text(
        f"# {name}\n\n`python experiments/next_topology/double_escape_check.py --n {args.n} --gammas {args.gammas} "
        f"--response {args.response} --seed {args.seed}"
        f"{''.join(f' --sim {p}' for p in args.sim)} --blob-radius {args.blob_radius}`\n\n{text}\n")
    (OUT / f"{name}.json").write_text(json.dumps({"window": win, "double_escape": de, "bb0nu": bb,
                                                  "args": vars(args)}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
