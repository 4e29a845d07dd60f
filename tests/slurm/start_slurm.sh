#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine for the runner's queue tests.
#
# Usage: tests/slurm/start_slurm.sh [STATE_DIR]
#
# Installs Debian's slurm-wlm and munge when missing (needs root and apt), writes a minimal
# slurm.conf into STATE_DIR (default /tmp/tomodash-slurm) describing this machine as node
# "localhost" with its CPUs, starts munged, slurmctld and slurmd (unless already running with
# that configuration) and waits until the node is idle. Prints "SLURM_CONF=<path>" last; export
# that variable so that sbatch/squeue/scancel talk to this cluster.
set -euo pipefail

STATE=${1:-/tmp/tomodash-slurm}
CONF="$STATE/slurm.conf"
CPUS=$(nproc)
export SLURM_CONF="$CONF"

log() { echo "start_slurm: $*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        log "slurm-wlm/munge are not installed and we are not root"; exit 3
    fi
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q slurm-wlm munge >&2
fi

mkdir -p "$STATE"/{ctld,d,log}
cat > "$CONF" <<CONFEOF
ClusterName=tomodash
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=6917
SlurmdPort=6918
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
LaunchParameters=enable_nss_slurm
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONFEOF

# munge: the Debian package creates /etc/munge/munge.key; make one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force >&2; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "munged" >&2 || munged --force >&2
    else
        munged --force >&2
    fi
    for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n </dev/null | unmunge >/dev/null

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if ! running "$STATE/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld -f "$CONF" -i >&2   # -i: ignore state left by an earlier run
fi
if ! running "$STATE/slurmd.pid"; then
    log "starting slurmd"
    slurmd -f "$CONF" -N localhost >&2
fi

for i in $(seq 120); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
case "$state" in
    idle|mix|alloc) ;;
    *) log "node did not become idle (state: '${state:-none}')"
       tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
       exit 4 ;;
esac
echo "SLURM_CONF=$CONF"
