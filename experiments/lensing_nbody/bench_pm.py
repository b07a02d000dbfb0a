"""Speed of numl's particle-mesh N-body and ray tracing: PM steps per second and maps per second.

    python experiments/lensing_nbody/bench_pm.py                       # CPU, two sizes
    python experiments/lensing_nbody/bench_pm.py --device cuda --sizes 128,256 256,512 512,1024

Per size (particles, mesh per side; box 256 Mpc/h, M_nu = 0.1 eV, 20 steps to z = 0): seconds for the 2LPT
initial conditions, PM steps per second (a step is one force evaluation: CIC painting, 1 forward and 3
inverse FFTs, CIC readout), the whole light cone to z_s = 1 (18 lens planes), and convergence maps per second
(3.5 deg, 64^2 pixels, Born). Both sizes are run in this one script, so their ratio is free of machine drift.

With `--peer-python` (an interpreter with jaxpm and jax installed, e.g. a separate venv: jaxpm needs JAX, which
numl does not), the same force evaluation (CIC paint, FFT, inverse-Laplacian, 3 gradients, CIC readout) of
jaxpm's `pm_forces` is timed at the sizes with as many particles as mesh cells (jaxpm's painting assumes one
particle per cell), jit-compiled and on one thread, right after numl's, and the ratio printed. jaxpm has no
massive neutrinos: numl's step includes the linear-response factor.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import torch

from numl.sim.lensing import Cosmology
from numl.sim.lensing.nbody import NBodySuite, ParticleMeshSimulation, born_convergence

# Run by --peer-python: jaxpm's force evaluation for n_particles^3 random particles on an n_mesh^3 mesh.
JAXPM_FORCES = """
import sys, time
import jax
from jaxpm.pm import pm_forces
n_particles, n_mesh = int(sys.argv[1]), int(sys.argv[2])
positions = jax.random.uniform(jax.random.PRNGKey(0), (n_particles**3, 3)) * n_mesh
forces = jax.jit(lambda p: pm_forces(p, mesh_shape=(n_mesh,) * 3))
forces(positions).block_until_ready()
start = time.perf_counter()
for _ in range(5):
    forces(positions).block_until_ready()
print(5 / (time.perf_counter() - start))
"""


def jaxpm_steps_per_second(python: str, n_particles: int, n_mesh: int) -> float:
    # One thread, as numl's CPU run: XLA's own thread pools off.
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([python, "-c", JAXPM_FORCES, str(n_particles), str(n_mesh)], capture_output=True,
                          text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64,64", "64,128", "128,128"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--maps", type=int, default=256)
    parser.add_argument("--cache-dir", default=os.environ.get("NUML_CACHE", ".cache") + "/camb")
    parser.add_argument("--peer-python", default=None, help="python with jaxpm installed: time its pm_forces too")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'CPU'}, " \
                                                                      f"{threads} thread(s)"
    print(f"{time.strftime('%Y-%m-%d')}, {where}, torch {torch.__version__}")
    print("particles, mesh | ICs [s] | PM steps/s | light cone to z_s=1 [s] | maps/s (3.5 deg, 64^2)")
    cosmology = Cosmology(m_nu_ev=0.1)
    for size in args.sizes:
        n_particles, n_mesh = (int(v) for v in size.split(","))
        suite = NBodySuite.from_config({"n_particles": n_particles, "n_mesh": n_mesh, "device": args.device})
        tables = suite.tables(cosmology, args.cache_dir)
        simulation = ParticleMeshSimulation(tables, suite.setup, seed=0, device=args.device)
        start = time.perf_counter()
        positions, _ = simulation.initial_conditions()
        synchronize(args.device)
        ics = time.perf_counter() - start
        simulation.accelerations(positions, 0.1)  # warm-up (CUDA kernels, FFT plans)
        synchronize(args.device)
        start = time.perf_counter()
        for _ in range(5):
            simulation.accelerations(positions, 0.1)
        synchronize(args.device)
        steps_per_second = 5 / (time.perf_counter() - start)
        start = time.perf_counter()
        planes = suite.light_cone(cosmology, 0, tables.chi_of_z(1.0), cache_dir=None, description="benchmark")
        synchronize(args.device)
        light_cone = time.perf_counter() - start
        start = time.perf_counter()
        born_convergence(planes, tables, [1.0], 3.5, 64, args.maps, seed=0)
        synchronize(args.device)
        maps_per_second = args.maps / (time.perf_counter() - start)
        print(f"{n_particles}^3, {n_mesh}^3 | {ics:.2f} | {steps_per_second:.2f} | {light_cone:.1f} | "
              f"{maps_per_second:.0f}")
        if args.peer_python and n_particles == n_mesh:  # jaxpm's painting takes one particle per mesh cell
            peer = jaxpm_steps_per_second(args.peer_python, n_particles, n_mesh)
            print(f"{n_particles}^3, {n_mesh}^3 | jaxpm pm_forces: {peer:.2f} steps/s; numl / jaxpm = "
                  f"{steps_per_second / peer:.2f}")


if __name__ == "__main__":
    main()
