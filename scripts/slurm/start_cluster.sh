#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (Debian slurm-wlm + munge), for CI and for trying
# numl's SLURM launcher locally. Run as root. Idempotent: a running cluster is left as it is.
#
#   sudo scripts/slurm/start_cluster.sh          # install if needed, configure, start, wait for the node
#   sinfo                                         # partition "debug", one node, state idle
#   sudo scripts/slurm/stop_cluster.sh
#
# No cgroups (containers rarely allow them): proctrack/linuxproc and task/none, no cgroup.conf. No accounting daemon:
# sacct is unavailable, so submitit learns that a job finished from its result file.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "start_cluster.sh: must run as root (it starts munged, slurmctld and slurmd)" >&2
    exit 1
fi

NODE=$(hostname -s)
CPUS=$(nproc)
# Leave 1 GiB to the system; SLURM refuses jobs asking more memory than RealMemory.
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
CONF_DIR=/etc/slurm
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "start_cluster.sh: SLURM already running"
    sinfo
    exit 0
fi

mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR" /run/munge /var/lib/munge /var/log/munge
chown -R slurm:slurm "$STATE_DIR" "$LOG_DIR" 2>/dev/null || true
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge

if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged
fi

cat > "$CONF_DIR/slurm.conf" <<CONF
# Written by numl scripts/slurm/start_cluster.sh: one node on localhost.
ClusterName=numl
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Requeued jobs (preemption, scontrol requeue) start again at once instead of being held.
JobRequeue=1
MaxJobCount=10000
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
# Let several tiny jobs share the CPUs of the CI machine: oversubscribe by 4.
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd || {
    echo "start_cluster.sh: slurmd failed to start; see $LOG_DIR/slurmd.log" >&2
    exit 1
}

for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true
        sinfo
        exit 0
    fi
    sleep 1
done
echo "start_cluster.sh: node did not become idle; see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log" >&2
sinfo >&2 || true
exit 1
