"""Every GPU claim of numl measured in one short run (issue 18); started by experiments/gpu/run_all.sh.

    python experiments/gpu/gpu_check.py --device cuda --out-dir results/     # on a CUDA machine, < 9 min
    python experiments/gpu/gpu_check.py --device cpu --out-dir /tmp/check    # dry run: tiny sizes, ~1-2 min

Sections, each a subprocess with its own time limit, in this order:

  prepare             CAMB spectra for every map size below, computed in parallel into the cache
  tests               pytest -m gpu tests/test_gpu.py: maps on CUDA = CPU maps, spconv on CUDA = dense
                      convolution, a bf16 training step is finite, the exported tagger is the same on CPU and CUDA
  throughput_eager    experiments/benchmarks/bench_lensing_cnn.py: numl vs a plain PyTorch loop, bf16 autocast,
                      channels-last (target numl/plain >= 0.90), and where a numl step's time goes
  throughput_compile  the same with torch.compile
  generation          experiments/benchmarks/bench_lensing_generation.py: on-the-fly maps as a share of a
                      lensing_cnn training step (target < 5 %)
  training            python -m numl.train experiment=lensing_cnn trainer=gpu with fresh maps for the time left
                      (at most --train-minutes), tested on 10,000 maps beside the likelihood ratio (target CNN
                      accuracy >= 0.846: the analytic optimum 0.856 minus 1 pp)
  tagger              a PETALO tagger (trained on the CPU in the background during `training`: the throughput does
                      not depend on how well it is trained), exported, events/s on the device at batch 1k-64k
                      (experiments/petalo_reconstruction/bench_tagger.py; target >= 1e6)

One JSON (<out dir>/gpu_check.json) is rewritten after every section, so a run that is killed keeps what it
measured; a section that fails or runs out of time records its error and the next one starts. The whole run
keeps to --budget-s from --t0 (run_all.sh passes its start time, so installing counts): each section's limit is
its own budget, shortened so that the sections after it keep their minimum. Work files go to --work-dir.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"numl_over_plain": 0.90, "generation_share_of_step": 0.05, "cnn_test_accuracy": 0.846,
           "tagger_events_per_s": 1e6}
LENSING_TRAIN_BATCH = 64  # lensing_cnn's data.batch_size: the step on-the-fly generation is compared with

# Sizes per device. cuda: the anchor setup of the issue (batch 256, 4 double-conv blocks 32->256, 128^2 maps);
# cpu: a dry run that checks every path end to end in seconds per section.
PROFILES = {
    "cuda": {
        "bench": ["--batch-size", "256", "--n-pix", "128", "--channels", "32", "64", "128", "256", "--batches", "50",
                  "--epochs", "3"],
        "eager_repeats": 5, "compile_repeats": 2,
        "generation": ["--n-pix", "128", "--batch-sizes", "64", "256", "1024", "--repeats", "5"],
        "train": ["data.n_train=16384", "data.n_val=512", "data.n_test=10000", "trainer.max_epochs=40"],
        "train_minutes": 4.0, "train_overhead_s": 45,  # start-up, 10k test maps, test, baseline
        "tagger_train": ["data.n_train=1024", "data.n_val=256", "data.n_test=64"],
        "tagger_bench": ["--batch-sizes", "1024", "4096", "16384", "65536", "--seconds", "1.0", "--n-events", "4096"],
        "camb_n_pix": [128, 64, 32],
        # section: (budget, minimum) in seconds
        "budgets": {"prepare": (60, 0), "tests": (90, 30), "throughput_eager": (75, 30),
                    "throughput_compile": (110, 50), "generation": (40, 15), "training": (330, 120),
                    "tagger": (60, 30)},
        "budget_s": 540,
    },
    "cpu": {
        "bench": ["--batch-size", "8", "--n-pix", "32", "--channels", "8", "16", "--batches", "3", "--epochs", "2"],
        "eager_repeats": 2, "compile_repeats": 1,
        "generation": ["--n-pix", "32", "--batch-sizes", "8", "64", "--repeats", "2"],
        "train": ["data.n_pix=32", "data.n_train=128", "data.n_val=64", "data.n_test=256", "trainer.max_epochs=2"],
        "train_minutes": 0.25, "train_overhead_s": 25,
        "tagger_train": ["data.n_train=256", "data.n_val=64", "data.n_test=64"],
        "tagger_bench": ["--batch-sizes", "64", "1024", "--seconds", "0.2", "--n-events", "256"],
        "camb_n_pix": [32, 64],  # 64: the gpu tests, when --tests-on-cpu runs them
        "budgets": {"prepare": (60, 0), "tests": (60, 20), "throughput_eager": (60, 20),
                    "throughput_compile": (120, 60), "generation": (40, 10), "training": (90, 40),
                    "tagger": (60, 20)},
        "budget_s": 420,
    },
}
ORDER = ("prepare", "tests", "throughput_eager", "throughput_compile", "generation", "training", "tagger")


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Proc:
    """A subprocess in its own process group whose output is echoed (with a prefix) and its tail kept."""

    def __init__(self, cmd: list[str], env: dict, prefix: str = "", cwd: Path = ROOT) -> None:
        self.cmd = cmd
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.popen = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
        self.reader = threading.Thread(target=self._echo, args=(prefix,), daemon=True)
        self.reader.start()

    def _echo(self, prefix: str) -> None:
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            self.tail.append(line)
            print(prefix + line, flush=True)

    def wait(self, timeout: float) -> tuple[int | None, bool]:
        """(return code, timed out); a process past its limit is killed with its children."""
        try:
            rc = self.popen.wait(timeout=max(timeout, 0.1))
            self.reader.join(timeout=5)
            return rc, False
        except subprocess.TimeoutExpired:
            self.kill()
            return None, True

    def kill(self) -> None:
        if self.popen.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def error(self, rc: int | None, timed_out: bool, timeout: float) -> str:
        head = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {rc}"
        return head + ": " + " | ".join(line for line in list(self.tail)[-8:] if line.strip())


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = PROFILES[args.device]
        self.t0 = args.t0 or time.time()
        self.deadline = self.t0 + (args.budget_s or self.profile["budget_s"])
        self.out = args.out_dir / "gpu_check.json"
        self.work = args.work_dir
        self.work.mkdir(parents=True, exist_ok=True)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "NUML_CACHE": os.environ.get("NUML_CACHE",
                                                                                         str(ROOT / ".cache"))}
        self.result = {"schema": 1, "started": datetime.fromtimestamp(self.t0, UTC).isoformat(),
                       "device_requested": args.device, "budget_s": round(self.deadline - self.t0),
                       "install": args.install_status, "environment": self.environment(),
                       "sections": {}, "targets": {}}
        self.background: Proc | None = None

    # ----- bookkeeping --------------------------------------------------------------------------------
    def environment(self) -> dict:
        import torch

        env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "cuda_available": torch.cuda.is_available(), "host": platform.node()}
        try:
            import pytorch_lightning

            env["pytorch_lightning"] = pytorch_lightning.__version__
        except ImportError:
            env["pytorch_lightning"] = None
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
            env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            from numl.models.sparse_cnn3d import spconv
            env["spconv"] = getattr(spconv, "__version__", "installed") if spconv is not None else None
        except Exception as err:  # a broken CUDA build of spconv raises more than ImportError
            env["spconv"] = f"import failed: {type(err).__name__}: {err}"
        return env

    def save(self) -> None:
        self.result["wall_s"] = round(time.time() - self.t0, 1)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=str) + "\n")
        os.replace(tmp, self.out)

    def remaining(self) -> float:
        return self.deadline - time.time()

    def limit(self, name: str) -> float:
        """This section's time limit: its budget, leaving the later sections their minimum."""
        budget, _ = self.profile["budgets"][name]
        later = ORDER[ORDER.index(name) + 1:]
        reserve = sum(self.profile["budgets"][n][1] for n in later if n not in self.args.skip)
        return min(budget, self.remaining() - reserve)

    def run(self, cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, bool, Proc]:
        log("$ " + " ".join(cmd))
        proc = Proc(cmd, env or self.env)
        rc, timed_out = proc.wait(timeout)
        return rc, timed_out, proc

    def section(self, name: str, fn) -> None:
        record: dict = {}
        self.result["sections"][name] = record
        minimum = self.profile["budgets"][name][1]
        if name in self.args.skip:
            record.update(status="skipped", reason="--skip " + name)
        elif (limit := self.limit(name)) < max(minimum, 1):
            record.update(status="skipped", reason=f"no time left: {limit:.0f} s for a section that needs "
                                                   f"{minimum} s ({self.remaining():.0f} s left of the budget)")
        else:
            log(f"section {name}: start, limit {limit:.0f} s, {self.remaining():.0f} s left of the budget")
            start = time.time()
            try:
                record.update(fn(limit))
            except Exception as err:  # noqa: BLE001 - a section's failure is recorded, the next one runs
                record.update(status="error", error=f"{type(err).__name__}: {err}")
            record.setdefault("status", "ok")
            record["wall_s"] = round(time.time() - start, 1)
        log(f"section {name}: {record['status']}" + (f" ({record.get('reason') or record.get('error')})"
                                                     if record["status"] != "ok" else f" in {record['wall_s']} s"))
        self.save()

    # ----- sections -----------------------------------------------------------------------------------
    def prepare(self, limit: float) -> dict:
        """CAMB spectra for every map size of the run, in parallel; later sections read them from the cache."""
        code = ("import sys; from numl.data.lensing import LensingDataModule; "
                "dm = LensingDataModule(n_pix=int(sys.argv[1]), cache_dir=sys.argv[2]); dm.build_simulators()")
        cache = str(Path(self.env["NUML_CACHE"]) / "camb")
        procs = {n: Proc([sys.executable, "-c", code, str(n), cache], self.env, prefix=f"[camb {n}] ")
                 for n in self.profile["camb_n_pix"]}
        start, failed = time.time(), {}
        for n, proc in procs.items():
            rc, timed_out = proc.wait(limit - (time.time() - start))
            if rc != 0:
                failed[n] = proc.error(rc, timed_out, limit)
        out = {"camb_n_pix": self.profile["camb_n_pix"], "cache": cache}
        if failed:
            out.update(status="error", error="; ".join(f"n_pix {n}: {e}" for n, e in failed.items()))
        return out

    def tests(self, limit: float) -> dict:
        junit = self.work / "gpu_tests.xml"
        junit.unlink(missing_ok=True)
        env = {**self.env}
        if self.args.device == "cpu" and self.args.tests_on_cpu:
            env["NUML_GPU_TEST_DEVICE"] = "cpu"
        rc, timed_out, proc = self.run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-rs",
                                        "-p", "no:cacheprovider", f"--junitxml={junit}"], limit, env)
        out: dict = {"on": env.get("NUML_GPU_TEST_DEVICE", "cuda")}
        if junit.is_file():
            root = ET.parse(junit).getroot()
            suite = root if root.tag == "testsuite" else root.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
            out.update(passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                       failed=counts["failures"], errors=counts["errors"], skipped=counts["skipped"])
            cases = {}
            for case in suite.iter("testcase"):
                outcome = "passed"
                for tag in ("failure", "error", "skipped"):
                    element = case.find(tag)
                    if element is not None:
                        outcome = f"{tag}: {(element.get('message') or '').splitlines()[0][:300]}" \
                            if element.get("message") else tag
                cases[case.get("name")] = outcome
            out["cases"] = cases
        if timed_out or rc not in (0, 5) or not junit.is_file():  # 5: no tests collected
            out.update(status="error", error=proc.error(rc, timed_out, limit))
        elif out.get("failed") or out.get("errors"):
            out.update(status="failed")
        self.target("gpu_tests", out.get("passed"), "all pass",
                    bool(out.get("passed")) and not out.get("failed") and not out.get("errors"))
        return out

    def throughput(self, limit: float, compile_model: bool) -> dict:
        if compile_model and self.args.device == "cpu" and not self.args.compile_on_cpu:
            return {"status": "skipped", "reason": "torch.compile on the CPU takes minutes (Inductor builds C++); "
                                                    "the dry run checks the eager path (--compile-on-cpu to try)"}
        name = "compile" if compile_model else "eager"
        path = self.work / f"throughput_{name}.json"
        path.unlink(missing_ok=True)
        repeats = self.profile["compile_repeats" if compile_model else "eager_repeats"]
        cmd = [sys.executable, "experiments/benchmarks/bench_lensing_cnn.py", "--device", self.args.device,
               *self.profile["bench"], "--repeats", str(repeats), "--out", str(path)]
        if compile_model:
            cmd.append("--compile")
        rc, timed_out, proc = self.run(cmd, limit)
        out = read_json(path) or {}
        if rc != 0:
            # bench_lensing_cnn.py writes after every repeat: a run cut short keeps the repeats it finished
            out.update(status="error" if not out.get("numl_samples_per_s") else "partial",
                       error=proc.error(rc, timed_out, limit))
        if "numl_over_plain" in out:
            self.target(f"numl_over_plain_{name}", out["numl_over_plain"], TARGETS["numl_over_plain"],
                        out["numl_over_plain"] >= TARGETS["numl_over_plain"],
                        median=out.get("numl_over_plain_median"))
        return out

    def generation(self, limit: float) -> dict:
        path = self.work / "generation.json"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, "experiments/benchmarks/bench_lensing_generation.py", "--device", self.args.device,
               *self.profile["generation"], "--precision", "bf16-mixed", "--channels-last", "--out", str(path)]
        rc, timed_out, proc = self.run(cmd, limit)
        out = read_json(path) or {}
        if rc != 0:
            out.update(status="error", error=proc.error(rc, timed_out, limit))
        rows = out.get("rows") or []
        if rows:
            row = next((r for r in rows if r["batch_size"] == LENSING_TRAIN_BATCH), rows[0])
            share = row["training_batch_share_of_step"]
            self.target("generation_share_of_step", share, TARGETS["generation_share_of_step"],
                        share < TARGETS["generation_share_of_step"], batch_size=row["batch_size"])
        return out

    def start_tagger_training(self) -> None:
        """The PETALO tagger for the `tagger` section, trained on the CPU while `training` uses the device."""
        run_dir = self.work / "petalo_tagger"
        env = {**self.env, "OMP_NUM_THREADS": str(max(1, min(4, (os.cpu_count() or 2) // 4)))}
        cmd = [sys.executable, "-m", "numl.train", "experiment=petalo_tagger", "trainer=cpu", "trainer.max_epochs=1",
               "test=false", "~callbacks.rich_progress_bar", "++trainer.enable_progress_bar=false",
               *self.profile["tagger_train"], f"hydra.run.dir={run_dir}"]
        log("background: $ " + " ".join(cmd))
        self.tagger_started = time.time()
        self.background = Proc(cmd, env, prefix="[tagger training] ")

    def training(self, limit: float) -> dict:
        if "tagger" not in self.args.skip:
            self.start_tagger_training()
        run_dir = self.work / "lensing_cnn"
        max_time_s = int(min(60 * self.args.train_minutes, limit - self.profile["train_overhead_s"]))
        if max_time_s < 10:
            return {"status": "skipped", "reason": f"{max_time_s} s of training left"}
        trainer = ["trainer=gpu"] if self.args.device == "cuda" else ["trainer=cpu"]
        cmd = [sys.executable, "-m", "numl.train", "experiment=lensing_cnn", *trainer, *self.profile["train"],
               f"++trainer.max_time=00:00:{max_time_s // 60:02d}:{max_time_s % 60:02d}",
               "baseline=likelihood_ratio", "figures=none", "~callbacks.rich_progress_bar",
               "++trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"]
        rc, timed_out, proc = self.run(cmd, limit)
        out: dict = {"max_time_s": max_time_s, "overrides": cmd[3:], "run_dir": str(run_dir)}
        metrics = (read_json(run_dir / "test_metrics.json") or {}).get("metrics")
        if rc != 0 or metrics is None:
            out.update(status="error", error=proc.error(rc, timed_out, limit))
        out.update(self._history(run_dir / "csv" / "metrics.csv"))
        if metrics:
            out["test_metrics"] = metrics
            cnn, lr = metrics.get("test/acc"), metrics.get("baseline/likelihood_ratio/acc")
            out.update(cnn_test_accuracy=cnn, likelihood_ratio_test_accuracy=lr,
                       cnn_minus_likelihood_ratio=None if cnn is None or lr is None else cnn - lr)
            if cnn is not None:
                self.target("cnn_test_accuracy", cnn, TARGETS["cnn_test_accuracy"], cnn >= TARGETS["cnn_test_accuracy"],
                            likelihood_ratio=lr)
        return out

    @staticmethod
    def _history(metrics_csv: Path) -> dict:
        """Epochs run and validation accuracy per epoch, from the run's CSV log."""
        import csv

        if not metrics_csv.is_file():
            return {}
        val_acc, steps = {}, 0
        with metrics_csv.open() as f:
            for row in csv.DictReader(f):
                if row.get("step"):
                    steps = max(steps, int(float(row["step"])))
                if row.get("val/acc") and row.get("epoch"):
                    val_acc[int(float(row["epoch"]))] = round(float(row["val/acc"]), 4)
        return {"epochs": len(val_acc), "optimizer_steps": steps, "val_acc_per_epoch": list(val_acc.values())}

    def tagger(self, limit: float) -> dict:
        start = time.time()
        if self.background is None:
            self.start_tagger_training()
        wait_s = limit * 0.6 - (time.time() - start)
        rc, timed_out = self.background.wait(wait_s)
        out: dict = {"tagger_training_s": round(time.time() - self.tagger_started, 1)}
        run_dir = self.work / "petalo_tagger"
        if rc != 0:
            error = self.background.error(rc, timed_out, time.time() - self.tagger_started)
            return {**out, "status": "error", "error": "tagger training: " + error}
        path = self.work / "tagger_throughput.json"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, "experiments/petalo_reconstruction/bench_tagger.py", str(run_dir), "--device",
               self.args.device, *self.profile["tagger_bench"], "--out", str(path)]
        rc, timed_out, proc = self.run(cmd, limit - (time.time() - start))
        out.update(read_json(path) or {})
        if rc != 0:
            out.update(status="error", error=proc.error(rc, timed_out, limit))
        rows = out.get("rows") or []
        if rows:
            best = max(rows, key=lambda r: r["exported_events_per_s"])
            out["max_exported_events_per_s"] = best["exported_events_per_s"]
            self.target("tagger_events_per_s", best["exported_events_per_s"], TARGETS["tagger_events_per_s"],
                        best["exported_events_per_s"] >= TARGETS["tagger_events_per_s"], batch_size=best["batch_size"])
        return out

    def target(self, name: str, value, target, met: bool, **extra) -> None:
        self.result["targets"][name] = {"value": value, "target": target, "met": bool(met),
                                        "device": self.args.device, **extra}

    # ----- the run ------------------------------------------------------------------------------------
    def main(self) -> int:
        log(f"device {self.args.device}; budget {self.deadline - self.t0:.0f} s ({self.remaining():.0f} s left); "
            f"JSON {self.out}; work files {self.work}")
        self.save()
        sections = {"prepare": self.prepare, "tests": self.tests,
                    "throughput_eager": lambda limit: self.throughput(limit, compile_model=False),
                    "throughput_compile": lambda limit: self.throughput(limit, compile_model=True),
                    "generation": self.generation, "training": self.training, "tagger": self.tagger}
        if self.args.device == "cuda" and not self.result["environment"]["cuda_available"]:
            for name in ORDER:
                self.result["sections"][name] = {"status": "skipped", "reason": "--device cuda, but torch "
                                                 f"{self.result['environment']['torch']} sees no CUDA device"}
            self.save()
            log("--device cuda, but torch sees no CUDA device: nothing measured")
            return 1
        try:
            for name in ORDER:
                self.section(name, sections[name])
        finally:
            if self.background is not None:
                self.background.kill()
            self.result["finished"] = datetime.now(UTC).isoformat()
            self.save()
        log(f"done in {time.time() - self.t0:.0f} s; wrote {self.out}")
        for name, record in self.result["sections"].items():
            log(f"  {name:20s} {record['status']}" + (f": {record.get('reason') or record.get('error', '')}"[:200]
                                                       if record["status"] != "ok" else ""))
        for name, t in self.result["targets"].items():
            log(f"  target {name}: {t['value']} vs {t['target']} -> {'met' if t['met'] else 'NOT met'}")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "experiments" / "gpu" / "results")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a fresh folder under /tmp")
    parser.add_argument("--budget-s", type=float, default=None, help="whole run (cuda 540, cpu 420)")
    parser.add_argument("--t0", type=float, default=None, help="start time (epoch seconds) the budget counts from")
    parser.add_argument("--train-minutes", type=float, default=None, help="training time at most (cuda 4, cpu 0.25)")
    parser.add_argument("--skip", nargs="*", default=[], choices=ORDER, help="sections to leave out")
    parser.add_argument("--compile-on-cpu", action="store_true", help="do not skip torch.compile in a CPU dry run")
    parser.add_argument("--tests-on-cpu", action="store_true",
                        help="CPU dry run: run the gpu tests on the CPU (NUML_GPU_TEST_DEVICE=cpu) instead of skipping")
    parser.add_argument("--install-status", default=None, help="what run_all.sh installed (recorded in the JSON)")
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.train_minutes is None:
        args.train_minutes = PROFILES[args.device]["train_minutes"]
    if args.work_dir is None:
        args.work_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"numl_gpu_check_{os.getpid()}"
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
