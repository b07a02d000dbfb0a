#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by start_cluster.sh (jobs are cancelled). Run as root.
set -uo pipefail
scancel --user=root 2>/dev/null || true
for daemon in slurmd slurmctld munged; do
    if pid=$(pgrep -x "$daemon"); then
        kill $pid
    fi
done
echo "stop_cluster.sh: stopped"
