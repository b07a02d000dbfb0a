"""Before a sweep submits anything: can SLURM ever run the jobs that hydra.launcher describes?

A job asking more than any node has (CPUs, memory, GPUs) or more time than the partition allows stays
PENDING for ever, and the sweep would wait on it silently. sinfo tells what the partition's nodes have,
so the key to change is named; `sbatch --test-only` then asks the controller itself about the rest
(account, QOS, extra sbatch options), without submitting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from numl.utils.errors import ConfigError

# One row per group of identical nodes: partition (default marked *), CPUs and memory (MB) per node,
# generic resources, node count, time limit, availability.
SINFO_FORMAT = "%P|%c|%m|%G|%D|%l|%a"


@dataclass(frozen=True)
class NodeGroup:
    partition: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int
    count: int
    time_limit_min: float | None  # None: no limit
    up: bool


def gpus_in_gres(gres: str) -> int:
    """GPUs per node in sinfo's %G, e.g. 'gpu:a100:4(S:0-1),shard:8' -> 4; '(null)' -> 0."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = item.strip().split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def minutes(time_limit: str) -> float | None:
    """SLURM time ('infinite', 'MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') in minutes."""
    if time_limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = time_limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # D-HH[:MM[:SS]]
        hours, mins, secs = (parts + [0, 0])[:3]
        return int(days) * 1440 + hours * 60 + mins + secs / 60
    if len(parts) == 1:
        return float(parts[0])
    if len(parts) == 2:
        return parts[0] + parts[1] / 60
    return parts[0] * 60 + parts[1] + parts[2] / 60


def parse_sinfo(text: str) -> list[NodeGroup]:
    groups = []
    for line in text.splitlines():
        if not line.strip():
            continue
        partition, cpus, memory, gres, count, limit, avail = line.strip().split("|")
        groups.append(NodeGroup(
            partition=partition.rstrip("*"), default=partition.endswith("*"), cpus=int(cpus.rstrip("+")),
            memory_mb=int(memory.rstrip("+")), gpus=gpus_in_gres(gres), count=int(count),
            time_limit_min=minutes(limit), up=avail == "up",
        ))
    return groups


@dataclass(frozen=True)
class JobRequest:
    """What one submitit job asks SLURM for, from hydra.launcher (the keys submitit turns into sbatch options)."""

    partition: str | None
    nodes: int
    tasks_per_node: int
    cpus_per_task: int
    gpus_per_node: int
    mem_gb: float | None
    timeout_min: float

    @classmethod
    def from_launcher(cls, launcher: Mapping[str, Any]) -> JobRequest:
        return cls(
            partition=launcher.get("partition") or None, nodes=int(launcher.get("nodes") or 1),
            tasks_per_node=int(launcher.get("tasks_per_node") or 1),
            cpus_per_task=int(launcher.get("cpus_per_task") or 1),
            gpus_per_node=int(launcher.get("gpus_per_node") or 0), mem_gb=launcher.get("mem_gb"),
            timeout_min=float(launcher.get("timeout_min") or 0),
        )


def unschedulable_reason(request: JobRequest, groups: list[NodeGroup]) -> str | None:
    """One line naming the hydra.launcher key that no node of the partition can satisfy, or None if one can."""
    if request.partition is None:
        defaults = [g for g in groups if g.default]
        if not defaults:
            return "hydra.launcher.partition=null: the cluster has no default partition; name one"
        partition = defaults[0].partition
    else:
        partition = request.partition
        known = sorted({g.partition for g in groups})
        if partition not in known:
            return f"hydra.launcher.partition={partition!r}: no such SLURM partition; have {', '.join(known)}"
    nodes = [g for g in groups if g.partition == partition]
    where = f"partition {partition!r}"

    cpus = request.cpus_per_task * request.tasks_per_node
    most_cpus = max(g.cpus for g in nodes)
    if cpus > most_cpus:
        return (f"hydra.launcher.cpus_per_task={request.cpus_per_task}: a job needs {cpus} CPUs on one node "
                f"(x tasks_per_node={request.tasks_per_node}); the nodes of {where} have at most {most_cpus}, "
                "so it could never start")
    if request.mem_gb is not None:
        most_mb = max(g.memory_mb for g in nodes)
        if float(request.mem_gb) * 1024 > most_mb:
            return (f"hydra.launcher.mem_gb={request.mem_gb}: the nodes of {where} have at most "
                    f"{most_mb / 1024:.1f} GB; the job could never start")
    if request.gpus_per_node:
        most_gpus = max(g.gpus for g in nodes)
        if request.gpus_per_node > most_gpus:
            have = f"at most {most_gpus} GPUs" if most_gpus else "no GPUs"
            return (f"hydra.launcher.gpus_per_node={request.gpus_per_node}: the nodes of {where} have {have}; "
                    "the job could never start")
    fitting = sum(g.count for g in nodes if g.cpus >= cpus and g.gpus >= request.gpus_per_node
                  and (request.mem_gb is None or g.memory_mb >= float(request.mem_gb) * 1024))
    if request.nodes > fitting:
        return (f"hydra.launcher.nodes={request.nodes}: {where} has {fitting} node(s) with the CPUs, memory "
                "and GPUs asked for; the job could never start")
    limits = [g.time_limit_min for g in nodes]
    if None not in limits and request.timeout_min > max(limits):
        return (f"hydra.launcher.timeout_min={request.timeout_min:g}: {where} allows at most "
                f"{max(limits):g} min per job")
    return None


def sbatch_test_arguments(launcher: Mapping[str, Any]) -> list[str]:
    """The sbatch options submitit would use for these launcher settings, for `sbatch --test-only`."""
    request = JobRequest.from_launcher(launcher)
    args = [f"--nodes={request.nodes}", f"--ntasks-per-node={request.tasks_per_node}",
            f"--cpus-per-task={request.cpus_per_task}", f"--time={max(1, round(request.timeout_min))}"]
    if request.partition:
        args.append(f"--partition={request.partition}")
    if request.gpus_per_node:
        args.append(f"--gpus-per-node={request.gpus_per_node}")
    if request.mem_gb is not None:
        args.append(f"--mem={request.mem_gb}GB")
    for key in ("account", "qos", "constraint", "comment", "exclude", "gres", "cpus_per_gpu", "gpus_per_task",
                "mem_per_gpu", "mem_per_cpu"):
        if launcher.get(key):
            args.append(f"--{key.replace('_', '-')}={launcher[key]}")
    for key, value in dict(launcher.get("additional_parameters") or {}).items():
        args.append(f"--{str(key).replace('_', '-')}={value}")
    return args


def check_slurm_job_fits(launcher: Mapping[str, Any]) -> None:
    """Raise ConfigError (one line) if SLURM could never run a job with these hydra.launcher settings."""
    label = f"hydra.launcher.partition={launcher.get('partition')!r}"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise ConfigError(f"{label}: sinfo/sbatch not found; run the sweep on a SLURM login node")
    result = subprocess.run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[0]
        raise ConfigError(f"{label}: cannot query SLURM with sinfo ({reason})")
    reason = unschedulable_reason(JobRequest.from_launcher(launcher), parse_sinfo(result.stdout))
    if reason is not None:
        raise ConfigError(reason)
    test = subprocess.run(["sbatch", "--test-only", *sbatch_test_arguments(launcher), "--wrap", "true"],
               capture_output=True, text=True, timeout=60)
    if test.returncode != 0:
        lines = [line for line in (test.stderr + test.stdout).strip().splitlines() if line.strip()]
        detail = lines[-1].removeprefix("sbatch: error: ") if lines else f"exit code {test.returncode}"
        raise ConfigError(f"hydra.launcher: SLURM would refuse the job (sbatch --test-only: {detail})")
