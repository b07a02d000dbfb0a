"""Errors over simulations, not maps: leave-one-simulation-out cross-validation of the summary-statistic classifiers.

    python experiments/lensing_nbody/simulation_cv.py data/lensing_nbody_study_tomo_noise_free.h5 \
        --compare data/lensing_nbody_study_tomo_noise_free_multi_plane.h5 \
        --baselines power_spectrum all_statistics --set power_spectrum.covariance=pooled

All maps of a file's splits (a `python -m numl.simulate` N-body suite) are pooled and grouped by the simulation they
were traced through (`numl.sim.lensing.nbody.simulation_of_maps`; with matched phases one group is the massive and
the massless simulation of the same initial phases). Each group in turn is held out: every baseline (`conf/baseline/
<name>.yaml`, `--set name.key=value` to change one) is fitted on the other groups' maps and tested on it. Printed:
accuracy per held-out simulation, the accuracy over all maps with two errors, the binomial one over maps and the one
over simulations (cluster-robust: the maps' errors summed per simulation), and paired differences (between
baselines, and between files with `--compare`: the same maps ray traced another way), tested over simulations (mean
and t-test of the per-simulation differences) beside McNemar's map-level test. Maps of one simulation share its
modes, so the map-level errors are too small; the two side by side show by how much. Cross-validation folds share
most of their fitting maps, so even the errors over simulations leave out how much the fits themselves vary.

`--runs RUN ...`: the same errors for everything a set of `numl.train` runs tested (the network and its baselines),
from their test predictions: typically one run per `data.simulation_fold` (the suite's simulations dealt to the
splits as fold k), so that every simulation is tested once by a network trained without it:

    for k in 0 1 2 3 4 5; do python -m numl.train experiment=lensing_nbody_study data.source=hdf5 \
        data.hdf5_path=$PWD/data/lensing_nbody_study_noisy.h5 data.simulation_fold=$k hydra.run.dir=$OUT/fold$k; done
    python experiments/lensing_nbody/simulation_cv.py --runs $OUT/fold*

Runs of an M_nu regression suite (`experiment=lensing_nbody_mnu_regression`, its simulations dealt the same way)
get the regression's figures instead: RMSE, correlation with the truth, slope of the estimate against the truth and
1-sigma coverage of the network and of each chi^2 fit over all test maps, each with a 68 % interval from resampling
simulations (a bootstrap of whole simulations: with matched phases one simulation is its initial phases in every
cosmology), and the network's difference from each fit with 95 % intervals over simulations and, for contrast,
over maps:

    R128="data.nbody.n_particles=128 data.nbody.n_mesh=256"
    for k in 0 1 2 3 4 5; do python -m numl.train experiment=lensing_nbody_mnu_regression $R128 data.source=hdf5 \
        data.hdf5_path=$PWD/data/lensing_nbody_128_mnu_regression.h5 data.simulation_fold=$k \
        'baseline=[power_spectrum,all_statistics]' hydra.run.dir=$OUT/reg_128_fold$k; done
    python experiments/lensing_nbody/simulation_cv.py --runs $OUT/reg_128_fold*

With `voids_vs_clusters.json` of `numl.attribute` in the runs (`--attribution`, a path inside each run; attributed
with n_events at least the test split's size, so that every test simulation is in it), the AUROC lost by masking
the highest (clusters), lowest (voids) and random pixels is averaged over the runs, with its standard error over
them (each run's test maps are its own simulations), and clusters against voids tested.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.stats import binomtest, ttest_1samp

from numl.data.lensing import MapSet
from numl.evaluate import run_config_for
from numl.pipeline import PREDICTIONS_FILE
from numl.sim.lensing.maps import log_ell_bin_edges
from numl.sim.lensing.nbody import simulation_of_maps
from numl.utils.errors import ConfigError
from numl.utils.runtime import register_resolvers

BASELINE_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "baseline"
SPLITS = ("train", "val", "test")
RESAMPLES = 2000


def read_suite(path: str) -> tuple[MapSet, np.ndarray, dict]:
    """All splits' maps, the simulation of every map (numbered over the splits) and the file's config."""
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file; write the suite with python -m numl.simulate")
    with h5py.File(path) as h5:
        if "numl_config" not in h5.attrs or "numl_generator" in h5.attrs:
            raise ConfigError(f"{path}: not an N-body suite written by numl.simulate (no numl_config, or maps "
                              "written by numl.generate)")
        config = json.loads(h5.attrs["numl_config"])
        if config.get("field") != "nbody" or config.get("target") != "classification":
            raise ConfigError(f"{path}: field={config.get('field')!r}, target={config.get('target')!r}; "
                              "simulation folds need a classification suite of N-body maps (data.field=nbody)")
        simulations = config["nbody"]["simulations"]
        maps, labels, m_nu, groups = [], [], [], []
        for split in SPLITS:
            split_labels = h5[split]["label"][:]
            maps.append(torch.from_numpy(h5[split]["convergence_map"][:]))
            labels.append(split_labels)
            m_nu.append(h5[split]["m_nu_ev"][:])
            groups.append(simulation_of_maps(split_labels, simulations, split))
    events = MapSet(torch.cat(maps), torch.from_numpy(np.concatenate(labels)), torch.from_numpy(np.concatenate(m_nu)))
    return events, np.concatenate(groups), config


class HeldOutSimulation:
    """What a summary-statistic baseline reads from a data module, for one fold: fitted on `fit`, tested on `test`."""

    target = "classification"
    periodic_maps = False  # ray-traced maps are cut from lens planes

    def __init__(self, config: dict, fit: MapSet, test: MapSet) -> None:
        self.field_deg, self.n_pix = config["field_deg"], config["n_pix"]
        self.m_nu_values = config["m_nu_values_ev"]
        self.fit, self.test = fit, test
        self.split_sizes = {"train": len(fit)}

    def ell_bin_edges(self, n_bins: int) -> np.ndarray:
        return log_ell_bin_edges(self.field_deg, self.n_pix, n_bins)

    def fitting_maps(self, n: int) -> MapSet:
        return self.fit

    def events(self, split: str) -> MapSet:
        return self.test


def baseline_configs(names: list[str], overrides: list[str]):
    configs = {}
    for name in names:
        path = BASELINE_CONFIGS / f"{name}.yaml"
        if not path.is_file():
            allowed = ", ".join(sorted(p.stem for p in BASELINE_CONFIGS.glob("*.yaml")))
            raise ConfigError(f"--baselines {name}: no {path}; one of {allowed}")
        configs[name] = OmegaConf.load(path)[name]
        if not configs[name].get("_target_", "").endswith(".SummaryStatisticBaseline"):
            raise ConfigError(f"--baselines {name}: {configs[name].get('_target_')} is not a summary-statistic "
                              "baseline (numl.baselines.lensing.SummaryStatisticBaseline), which is what is refitted")
    for override in overrides:
        key, _, value = override.partition("=")
        name = key.split(".")[0]
        if name not in configs or "." not in key or not value:
            raise ConfigError(f"--set {override}: must be <baseline>.<key>=<value> for one of {', '.join(configs)}")
        OmegaConf.update(configs[name], key.split(".", 1)[1], OmegaConf.from_dotlist([f"v={value}"]).v, merge=True)
    return configs


def cross_validate(events: MapSet, groups: np.ndarray, config: dict, configs) -> dict[str, np.ndarray]:
    """Per baseline: whether each map was classified right when its simulation was held out."""
    correct = {name: np.zeros(len(groups), dtype=bool) for name in configs}
    for g in np.unique(groups):
        held_out = torch.from_numpy(groups == g)
        take = lambda mask: MapSet(events.maps[mask], events.labels[mask], events.m_nu[mask])  # noqa: E731
        fold = HeldOutSimulation(config, take(~held_out), take(held_out))
        for name, cfg in configs.items():
            result = instantiate(cfg).fit(fold).evaluate(fold)
            predicted = result.outputs["score"] > 0
            correct[name][groups == g] = predicted == fold.test.labels.numpy()
        print(f"  simulation {g} held out ({int(held_out.sum())} maps): "
              + ", ".join(f"{name} {correct[name][groups == g].mean():.3f}" for name in configs), flush=True)
    return correct


def run_data_config(run: str):
    """The data config of a `numl.train` run, which must classify or regress N-body maps read from HDF5."""
    register_resolvers()  # the run configs' own interpolations (paths)
    data = run_config_for(Path(run) / PREDICTIONS_FILE).data
    field, source, target = (data.get(key) for key in ("field", "source", "target"))
    if (field, source) != ("nbody", "hdf5") or target not in ("classification", "regression"):
        raise ConfigError(f"--runs {run}: data.field={field}, source={source}, target={target}; needs "
                          "classification or regression of N-body maps read from HDF5")
    return data


def run_test_data(run: str):
    """The data module of a `numl.train` run on N-body maps from HDF5, as it ran (its fold included)."""
    return instantiate(run_data_config(run), _convert_="all")


def classified_right(predictions, key: str) -> np.ndarray:
    """Per test map of a run's predictions: whether `key` (network or baseline/<name>) classified it right."""
    # the network's score is the massive-class probability, a baseline's a log-likelihood ratio
    threshold = 0.5 if key == "network" else 0.0
    return (predictions[f"{key}/score"] > threshold) == predictions[f"{key}/label"]


def tested_maps(run_dirs: list[str]):
    """Per run: its data module, the simulation of each test map (`LensingDataModule.map_simulations`) and its test
    predictions. No simulation may be tested twice."""
    tested_in = {}
    for run in run_dirs:
        if not (Path(run) / PREDICTIONS_FILE).is_file():
            raise ConfigError(f"--runs {run}: no {PREDICTIONS_FILE}; the run did not finish testing")
        data = run_test_data(run)
        run_groups = data.map_simulations("test")
        for g in np.unique(run_groups):
            if g in tested_in:
                raise ConfigError(f"--runs: simulation {g} is tested in both {tested_in[g]} and {run}")
            tested_in[g] = run
        yield run, data, run_groups, np.load(Path(run) / PREDICTIONS_FILE)


def tested_runs(run_dirs: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per estimator of the runs (network, baseline/<name>): whether each test map of every run was classified
    right, and the simulation of each map."""
    correct, groups = {}, []
    for run, data, run_groups, predictions in tested_maps(run_dirs):
        keys = [k.removesuffix("/score") for k in predictions.files if k.endswith("/score")]
        if "network" not in keys or (correct and set(keys) != set(correct)):
            raise ConfigError(f"--runs: {run} tested {sorted(keys)}; every run must test the network and the same "
                              f"baselines{f' as the runs before it ({sorted(correct)})' if correct else ''}")
        labels = data.events("test").labels.numpy()
        for key in keys:
            if not np.array_equal(predictions[f"{key}/label"], labels):
                raise ConfigError(f"--runs: {run}: {key} was tested on other maps than its config's test split")
            correct.setdefault(key, []).append(classified_right(predictions, key))
        groups.append(run_groups)
    return {key: np.concatenate(v) for key, v in correct.items()}, np.concatenate(groups)


def regression_runs(run_dirs: list[str]) -> tuple[dict[str, tuple[np.ndarray, ...]], np.ndarray, np.ndarray]:
    """Per estimator (network, baseline/<name>): M_nu estimate and the low and high ends of its 68 % interval
    (the network's: its predicted sigma either side; a chi^2 fit's: as it reports it, within the grid) for every
    test map of the runs; the true M_nu and the simulation of each map."""
    estimates, truth, groups = {}, [], []
    for run, data, run_groups, predictions in tested_maps(run_dirs):
        baselines = [k.removesuffix("/m_nu_mean") for k in predictions.files if k.endswith("/m_nu_mean")]
        keys = ["network", *baselines]
        if "network/m_nu_ev_pred" not in predictions.files or (estimates and set(keys) != set(estimates)):
            raise ConfigError(f"--runs: {run} estimated {sorted(keys)}; every run must test the network and the "
                              f"same baselines{f' as the runs before it ({sorted(estimates)})' if estimates else ''}")
        # the grid value itself (float64), as the chi^2 fits compare it: the maps' float32 M_nu lies just outside an
        # interval ending on it
        m_nu = np.asarray(data.m_nu_values)[data.events("test").labels.numpy()]
        if not np.allclose(predictions["network/m_nu_ev"], m_nu, atol=1e-6):
            raise ConfigError(f"--runs: {run}: the network was tested on other maps than its config's test split")
        pred, sigma = predictions["network/m_nu_ev_pred"], predictions["network/m_nu_ev_sigma"]
        estimates.setdefault("network", []).append((pred, pred - sigma, pred + sigma))
        for key in baselines:
            estimates.setdefault(key, []).append(tuple(predictions[f"{key}/m_nu_{end}"]
                                                       for end in ("mean", "low", "high")))
        truth.append(m_nu)
        groups.append(run_groups)
    merged = {key: tuple(np.concatenate(parts) for parts in zip(*runs, strict=True)) for key, runs in estimates.items()}
    return merged, np.concatenate(truth), np.concatenate(groups)


def regression_figures(estimate: np.ndarray, low: np.ndarray, high: np.ndarray, truth: np.ndarray
                       ) -> dict[str, float]:
    """RMSE, correlation with the truth, slope of the estimate against the truth, share of 68 % intervals
    holding the truth."""
    return {"RMSE": float(np.sqrt(np.mean((estimate - truth) ** 2))),
            "correlation": float(np.corrcoef(estimate, truth)[0, 1]),
            "slope": float(np.polyfit(truth, estimate, 1)[0]),
            "coverage": float(np.mean((low <= truth) & (truth <= high)))}


def resampled(groups: np.ndarray, rng: np.random.Generator, by_simulation: bool):
    """Index sets of bootstrap resamples: whole simulations (`by_simulation`) or single maps."""
    if not by_simulation:
        for _ in range(RESAMPLES):
            yield rng.integers(0, len(groups), len(groups))
        return
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(RESAMPLES):
        yield np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])


def regression_summary(estimates: dict, truth: np.ndarray, groups: np.ndarray) -> None:
    """Each estimator's figures with 68 % intervals over simulations; the network minus each baseline with 95 %
    intervals over simulations and over maps."""
    rng = np.random.default_rng(0)
    samples = {by: list(resampled(groups, rng, by)) for by in (True, False)}
    figures = {key: regression_figures(*values, truth) for key, values in estimates.items()}
    # every estimator on the same resamples, so their differences are paired
    boot = {(key, by): [regression_figures(*(v[i] for v in values), truth[i]) for i in samples[by]]
            for key, values in estimates.items() for by in (True, False)}
    for key, fig in figures.items():
        print(f"  {key}: " + ", ".join(
            f"{name} {value:.3f} ({np.percentile([b[name] for b in boot[key, True]], 16):.3f}-"
            f"{np.percentile([b[name] for b in boot[key, True]], 84):.3f})" for name, value in fig.items()))
    for key in [k for k in estimates if k != "network"]:
        for name in ("RMSE", "correlation"):
            intervals = []
            for by, label in ((True, "simulations"), (False, "maps")):
                diff = [n[name] - b[name] for n, b in zip(boot["network", by], boot[key, by], strict=True)]
                intervals.append(f"over {label} {np.percentile(diff, 2.5):+.3f} to {np.percentile(diff, 97.5):+.3f}")
            print(f"  network - {key}, {name}: {figures['network'][name] - figures[key][name]:+.3f} (95 %: "
                  + "; ".join(intervals) + ")")


def masking_over_runs(run_dirs: list[str], attribution: str) -> None:
    """AUROC lost by masking each fraction of the highest, lowest and random pixels, mean +- standard error over
    the runs, and highest - lowest (clusters against voids) tested over the runs."""
    results, shares = [], []
    for run in run_dirs:
        path = Path(run) / attribution / "voids_vs_clusters.json"
        if not path.is_file():
            raise ConfigError(f"--attribution {attribution}: no {path}; run numl.attribute with "
                              "voids_vs_clusters.enabled=true there")
        n_attributed = json.loads((path.parent / "summary.json").read_text())["n_events"]
        n_test = len(run_test_data(run).events("test"))
        if n_attributed < n_test:
            raise ConfigError(f"--attribution: {path.parent} attributed {n_attributed} of the run's {n_test} test "
                              f"maps (the first ones: not every test simulation); rerun with n_events={n_test}")
        found = json.loads(path.read_text())
        results.append(found["masking"])
        shares.append((found["void_attribution_share"], found["void_pixel_share"]))
        if set(results[-1]["highest"]) != set(results[0]["highest"]):
            raise ConfigError(f"--attribution: {path} masks fractions {sorted(results[-1]['highest'])}, the "
                              f"first run {sorted(results[0]['highest'])}")
    attribution_share, pixel_share = np.array(shares).T
    print(f"share of |attribution| in voids (nu < 0): {attribution_share.mean():.3f} +- "
          f"{attribution_share.std(ddof=1) / np.sqrt(len(shares)):.3f} over {len(shares)} runs, of the pixels "
          f"{pixel_share.mean():.3f}")
    unmasked = np.array([r["unmasked"]["0.0"]["auroc"] for r in results])
    print(f"AUROC unmasked: {unmasked.mean():.3f} +- {unmasked.std(ddof=1) / np.sqrt(len(unmasked)):.3f} "
          f"over {len(results)} runs")
    for fraction in results[0]["highest"]:
        lost = {which: unmasked - np.array([r[which][fraction]["auroc"] for r in results])
                for which in ("highest", "lowest", "random")}
        clusters_minus_voids = lost["highest"] - lost["lowest"]
        print(f"  {float(fraction):.0%} masked, AUROC lost: " + ", ".join(
            f"{which} {v.mean():.3f} +- {v.std(ddof=1) / np.sqrt(len(v)):.3f}" for which, v in lost.items())
            + f"; highest - lowest {clusters_minus_voids.mean():+.3f} +- "
            f"{clusters_minus_voids.std(ddof=1) / np.sqrt(len(results)):.3f} "
            f"(t-test p = {ttest_1samp(clusters_minus_voids, 0.0).pvalue:.2g})")


def per_simulation(correct: np.ndarray, groups: np.ndarray) -> np.ndarray:
    return np.array([correct[groups == g].mean() for g in np.unique(groups)])


def summary(label: str, correct: np.ndarray, groups: np.ndarray) -> str:
    """Accuracy over all maps, its binomial error and its cluster-robust error over simulations (each simulation's
    residuals summed first: sqrt(G / (G - 1) sum_g (sum_{i in g} (x_i - mean))^2) / N)."""
    accuracy = correct.mean()
    per_sim = per_simulation(correct, groups)
    cluster_sums = np.array([(correct[groups == g] - accuracy).sum() for g in np.unique(groups)])
    n_sims = len(cluster_sums)
    over_simulations = np.sqrt(n_sims / (n_sims - 1) * (cluster_sums ** 2).sum()) / len(correct)
    return (f"{label}: {accuracy:.3f} +- {np.sqrt(accuracy * (1 - accuracy) / len(correct)):.3f} over maps, "
            f"+- {over_simulations:.3f} over {n_sims} simulations "
            f"(per simulation {per_sim.min():.3f} to {per_sim.max():.3f})")


def difference(label: str, a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> str:
    """b - a, tested over simulations and (for contrast) over maps."""
    per_sim = per_simulation(b, groups) - per_simulation(a, groups)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    mcnemar = binomtest(min(only_a, only_b), only_a + only_b).pvalue if only_a + only_b else 1.0
    return (f"{label}: {b.mean() - a.mean():+.3f}; over simulations {per_sim.mean():+.3f} +- "
            f"{per_sim.std(ddof=1) / np.sqrt(len(per_sim)):.3f} (t-test p = {ttest_1samp(per_sim, 0.0).pvalue:.2g}); "
            f"map-level McNemar p = {mcnemar:.2g} ({only_a} vs {only_b} maps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", help="a numl.simulate HDF5 file of an N-body classification suite")
    parser.add_argument("--runs", nargs="+", help="numl.train run directories (e.g. one per data.simulation_fold)")
    parser.add_argument("--attribution", help="with --runs: the numl.attribute output inside each run "
                                              "(e.g. attribution/integrated_gradients)")
    parser.add_argument("--compare", help="the same suite written another way (e.g. data.nbody.ray_tracing)")
    parser.add_argument("--baselines", nargs="+", default=["power_spectrum", "all_statistics"],
                        help="names of conf/baseline/*.yaml")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="NAME.KEY=VALUE")
    args = parser.parse_args()
    if args.runs and run_data_config(args.runs[0]).target == "regression":
        estimates, truth, groups = regression_runs(args.runs)
        print(f"{len(args.runs)} runs: {len(groups)} test maps from {len(np.unique(groups))} simulations; 68 % "
              f"intervals from {RESAMPLES} resamples of whole simulations")
        regression_summary(estimates, truth, groups)
        return
    if args.runs:
        correct, groups = tested_runs(args.runs)
        if len(np.unique(groups)) < 2:
            raise ConfigError(f"--runs: the runs test {len(np.unique(groups))} simulation; errors over simulations "
                              "need at least 2")
        print(f"{len(args.runs)} runs: {len(groups)} test maps from {len(np.unique(groups))} simulations")
        for key in correct:
            print("  " + summary(key, correct[key], groups))
        for key in [k for k in correct if k != "network"]:
            print("  " + difference(f"network - {key}", correct[key], correct["network"], groups))
        if args.attribution:
            masking_over_runs(args.runs, args.attribution)
        return
    if not args.file:
        parser.error("give a suite's HDF5 file, or --runs")
    configs = baseline_configs(args.baselines, args.overrides)
    files = [args.file] + ([args.compare] if args.compare else [])
    results, groups = {}, None
    for path in files:
        events, file_groups, config = read_suite(path)
        if groups is not None and not np.array_equal(file_groups, groups):
            raise ConfigError(f"--compare {path}: its maps come from other simulations than {args.file}'s")
        groups = file_groups
        print(f"{path}: {len(groups)} maps from {len(np.unique(groups))} simulations (per cosmology)", flush=True)
        results[path] = cross_validate(events, groups, config, configs)
    print()
    for path, correct in results.items():
        print(path)
        for name in configs:
            print("  " + summary(name, correct[name], groups))
        for name in args.baselines[1:]:
            print("  " + difference(f"{name} - {args.baselines[0]}", correct[args.baselines[0]], correct[name], groups))
    if args.compare:
        print(f"{args.compare} - {args.file}")
        for name in configs:
            print("  " + difference(name, results[args.file][name], results[args.compare][name], groups))


if __name__ == "__main__":
    main()
