#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (localhost, 2 CPUs, no GPUs), for the tests that submit
# the README's batch script (tests/slurm.rs).
#
#   .ci/slurm.sh run CMD...   start a cluster in a temporary folder, run CMD with SLURM_CONF pointing
#                             at it (and CIFS_WGPU_REQUIRE_SLURM=1: the tests fail instead of
#                             skipping), stop it and remove the folder whatever CMD did
#   .ci/slurm.sh start DIR    start one in DIR (empty or missing); prints the SLURM_CONF to export
#   .ci/slurm.sh stop DIR     cancel its jobs, stop its daemons, leave DIR (logs) in place
#
# Installs Slurm 22.05 and munge (Debian 12's slurmd, slurmctld, slurm-client) where missing. Every
# file of the cluster (munge key and socket, slurm.conf, state, spool, logs, pid files) lives in the
# folder: nothing under /etc is read or changed, and a system munged or Slurm is left alone. The
# daemons run as root (as CI does) and accept root's jobs; process tracking is by process tree and
# no task plugin or accounting is used, so no cgroup is needed (containers often have none).
set -euo pipefail

CPUS=2
IDLE_TIMEOUT_S=60

install_missing() {
    local bin
    for bin in munged slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null 2>&1 || {
            echo "installing Slurm and munge (the Slurm tests)"
            local sudo=""
            [ "$(id -u)" -ne 0 ] && sudo="sudo"
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
            break
        }
    done
}

# A TCP port on 127.0.0.1 that nothing listens on, from $1 upward.
free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
        p=$((p + 1))
    done
    echo "$p"
}

write_conf() {
    local dir=$1 ctld_port d_port
    ctld_port=$(free_port 6817)
    d_port=$(free_port $((ctld_port + 1)))
    cat >"$dir/slurm.conf" <<EOF
ClusterName=cifs-ci
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    local m=$1/munge
    mkdir -p "$m"
    chmod 755 "$m"
    dd if=/dev/urandom of="$m/key" bs=1024 count=1 status=none
    chmod 400 "$m/key"
    munged --force --key-file="$m/key" --socket="$m/socket" --pid-file="$m/munged.pid" \
        --log-file="$m/munged.log" --seed-file="$m/seed"
}

print_logs() {
    local dir=$1 f
    for f in "$dir/munge/munged.log" "$dir/slurmctld.log" "$dir/slurmd.log"; do
        echo "----- $f" >&2
        tail -n 40 "$f" >&2 2>/dev/null || echo "(none)" >&2
    done
}

start() {
    local dir=$1 state waited=0
    install_missing
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 755 "$dir"
    mkdir -p "$dir/state" "$dir/spool"
    write_conf "$dir"
    export SLURM_CONF=$dir/slurm.conf
    # srun's pmix plugin is what the README's script names (srun reads the list from slurm.conf's
    # plugin folder; no daemon needed).
    if ! srun --mpi=list 2>&1 | grep -q pmix; then
        echo "error: srun --mpi=list offers no pmix plugin:" >&2
        srun --mpi=list >&2 || true
        return 1
    fi
    start_munge "$dir"
    slurmctld
    slurmd -N localhost
    until state=$(sinfo -h -n localhost -o %t 2>/dev/null) && [ "$state" = idle ]; do
        if [ "$waited" -ge "$IDLE_TIMEOUT_S" ]; then
            echo "error: the one-node Slurm in $dir is not idle after ${IDLE_TIMEOUT_S} s (node state: '${state:-no answer}')" >&2
            scontrol show node localhost >&2 || true
            print_logs "$dir"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "one-node Slurm up in ${waited} s: export SLURM_CONF=$SLURM_CONF"
}

# Sends SIGTERM to the daemon whose pid file is $1 and waits up to 10 s for it to end.
stop_daemon() {
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "$1: pid $pid still runs after 10 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    local dir
    dir=$(cd "$1" && pwd)
    export SLURM_CONF=$dir/slurm.conf
    # Jobs a failed test left running end first (their steps, the ranks included).
    if [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        scancel --full --signal=KILL --partition=ci 2>/dev/null || true
        for _ in $(seq 30); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    stop_daemon "$dir/slurmd.pid"
    stop_daemon "$dir/slurmctld.pid"
    stop_daemon "$dir/munge/munged.pid"
}

run() {
    local rc=0
    CLUSTER_DIR=$(mktemp -d /tmp/cifs-slurm.XXXXXX)
    # Whatever ends this script (a failed start or command, Ctrl-C, a kill) stops the cluster.
    trap 'stop "$CLUSTER_DIR"; rm -rf "$CLUSTER_DIR"' EXIT
    trap 'exit 130' INT TERM
    start "$CLUSTER_DIR"
    CIFS_WGPU_REQUIRE_SLURM=1 "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        print_logs "$CLUSTER_DIR"
    fi
    return "$rc"
}

case "${1:-}" in
    run) shift; run "$@" ;;
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *) echo "usage: $0 run CMD... | start DIR | stop DIR" >&2; exit 2 ;;
esac
