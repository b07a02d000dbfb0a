"""numl.sweeps.slurm: a SLURM job that could never start is refused before the sweep, naming the key.

The parsing and the resource comparison against sinfo output (here typed in, as sinfo prints it); the
same check against the real local cluster is in tests/test_slurm.py.
"""

from __future__ import annotations

import pytest

from numl.sweeps.slurm import (
    JobRequest,
    gpus_in_gres,
    minutes,
    parse_sinfo,
    sbatch_test_arguments,
    unschedulable_reason,
)

# Two partitions as `sinfo -h -o "%P|%c|%m|%G|%D|%l|%a"` prints them: a default CPU one, a GPU one
# with two kinds of node.
SINFO = """cpu*|64|256000|(null)|10|2-00:00:00|up
gpu|32|512000|gpu:a100:4(S:0-1)|4|12:00:00|up
gpu|48|1024000|gpu:h100:8,shard:16|2|12:00:00|up
"""


def _request(**changes) -> JobRequest:
    launcher = {"partition": "gpu", "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 4, "gpus_per_node": 1,
                "mem_gb": 16, "timeout_min": 240}
    return JobRequest.from_launcher({**launcher, **changes})


@pytest.mark.parametrize(("text", "expected"), [
    ("infinite", None), ("30", 30), ("30:30", 30.5), ("2:00:00", 120), ("1-00:00:00", 1440), ("2-12", 3600),
    ("1-01:30", 1530),
])
def test_slurm_time_limits_in_minutes(text, expected):
    assert minutes(text) == expected


@pytest.mark.parametrize(("gres", "expected"), [
    ("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4), ("gpu:h100:8,shard:16", 8), ("gpu:a:2,gpu:b:2", 4),
])
def test_gpus_per_node_from_gres(gres, expected):
    assert gpus_in_gres(gres) == expected


def test_sinfo_rows_parsed():
    groups = parse_sinfo(SINFO)
    assert [(g.partition, g.default, g.cpus, g.gpus, g.count, g.time_limit_min) for g in groups] == [
        ("cpu", True, 64, 0, 10, 2880), ("gpu", False, 32, 4, 4, 720), ("gpu", False, 48, 8, 2, 720)]


def test_a_job_that_fits_is_accepted():
    groups = parse_sinfo(SINFO)
    assert unschedulable_reason(_request(), groups) is None
    assert unschedulable_reason(_request(partition=None, gpus_per_node=None), groups) is None  # default partition
    # 8 GPUs exist on 2 of the GPU nodes: a 2-node job of 8 GPUs each fits, a 3-node one does not.
    assert unschedulable_reason(_request(gpus_per_node=8, nodes=2), groups) is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"cpus_per_task": 16, "tasks_per_node": 4},
     "hydra.launcher.cpus_per_task=16: a job needs 64 CPUs on one node (x tasks_per_node=4); the nodes of "
     "partition 'gpu' have at most 48, so it could never start"),
    ({"mem_gb": 2000}, "hydra.launcher.mem_gb=2000: the nodes of partition 'gpu' have at most 1000.0 GB"),
    ({"gpus_per_node": 16}, "hydra.launcher.gpus_per_node=16: the nodes of partition 'gpu' have at most 8 GPUs"),
    ({"partition": None}, "hydra.launcher.gpus_per_node=1: the nodes of partition 'cpu' have no GPUs"),
    ({"gpus_per_node": 8, "nodes": 3}, "hydra.launcher.nodes=3: partition 'gpu' has 2 node(s) with the CPUs"),
    ({"timeout_min": 1000}, "hydra.launcher.timeout_min=1000: partition 'gpu' allows at most 720 min per job"),
    ({"partition": "gpus"}, "hydra.launcher.partition='gpus': no such SLURM partition; have cpu, gpu"),
])
def test_a_job_that_could_never_start_is_named_by_its_key(changes, message):
    reason = unschedulable_reason(_request(**changes), parse_sinfo(SINFO))
    assert reason is not None and reason.startswith(message), reason
    assert "\n" not in reason


def test_no_default_partition_needs_a_name():
    groups = parse_sinfo(SINFO.replace("cpu*", "cpu"))
    assert unschedulable_reason(_request(partition=None), groups).startswith("hydra.launcher.partition=null")


def test_sbatch_test_options_mirror_submitit():
    launcher = {"partition": "gpu", "nodes": 2, "tasks_per_node": 4, "cpus_per_task": 8, "gpus_per_node": 4,
                "mem_gb": 64, "timeout_min": 120, "account": "proj", "additional_parameters": {"mail_type": "END"}}
    assert sbatch_test_arguments(launcher) == [
        "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=8", "--time=120", "--partition=gpu",
        "--gpus-per-node=4", "--mem=64GB", "--account=proj", "--mail-type=END"]
