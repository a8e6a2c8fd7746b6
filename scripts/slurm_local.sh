#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, to try sweeps, array jobs and requeue for real.
#   scripts/slurm_local.sh start    installs slurm-wlm + munge if missing, writes slurm.conf,
#                                   starts munged, slurmctld and slurmd, waits for the node
#   scripts/slurm_local.sh status   daemons and the node's state (exit 0 when it takes jobs)
#   scripts/slurm_local.sh stop     stops the three daemons (jobs still running are killed)
# Needs root. Daemons are started directly (no systemd, no cgroups: containers often lack both).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by scripts/slurm_local.sh"
STATE=/var/spool/slurm-local
LOGS=/var/log/slurm-local
RUN=/run/slurm-local
MUNGE_RUN=/run/munge
MUNGE_PID="$MUNGE_RUN/munged.pid"
WAIT_S="${SLURM_LOCAL_WAIT_S:-60}"

die() { echo "error: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "slurm_local.sh must run as root (it installs packages and starts daemons): rerun it with sudo"
}

# pid from a pid file, printed only if that process is alive
alive_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && echo "$pid"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
     command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null ||
    die "slurm-wlm and munge are not installed and apt-get is missing: install them with this system's package manager"
  mkdir -p "$LOGS"
  echo "installing slurm-wlm and munge with apt-get (a minute or two)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } >"$LOGS/apt.log" 2>&1; then
    die "apt-get install slurm-wlm munge failed (see $LOGS/apt.log): check the network and apt sources"
  fi
}

write_conf() {
  local node cpus mem_mb tmp
  node="$(hostname -s)"
  cpus="$(nproc)"
  mem_mb="$(free -m | awk '/^Mem:/ {print int($2 * 0.95)}')"  # below what slurmd detects
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script: use that cluster, or move the file away and rerun"
  fi
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
  tmp="$(mktemp)"
  cat >"$tmp" <<EOF
$MARK: a single-node cluster for local tests.
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=10
MpiDefault=none
# Containers rarely allow cgroups: track processes by parentage, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Schedule often: a small cluster should start a freed or requeued job within seconds.
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A node that was down comes back by itself; jobs may be requeued (scontrol requeue, pre-emption).
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"
    return 1  # unchanged
  fi
  mv "$tmp" "$CONF"
  chmod 644 "$CONF"
  return 0
}

start_munge() {
  if [ -n "$(alive_pid "$MUNGE_PID" || true)" ]; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  mkdir -p "$MUNGE_RUN" /var/log/munge /var/lib/munge
  chown munge:munge "$MUNGE_RUN" /var/log/munge /var/lib/munge 2>/dev/null || true
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged --pid-file="$MUNGE_PID" || die "munged did not start (see /var/log/munge/munged.log)"
  else
    munged --force --pid-file="$MUNGE_PID" || die "munged did not start (see /var/log/munge/munged.log)"
  fi
  for _ in $(seq 1 20); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "munge does not answer (see /var/log/munge/munged.log)"
}

node_state() {
  sinfo -h -N -n "$(hostname -s)" -o '%T' 2>/dev/null | head -1
}

status() {
  local ctld slurmd munge state
  munge="$(alive_pid "$MUNGE_PID" || true)"
  ctld="$(alive_pid "$RUN/slurmctld.pid" || true)"
  slurmd="$(alive_pid "$RUN/slurmd.pid" || true)"
  state="$(node_state || true)"
  echo "munged: ${munge:-stopped}  slurmctld: ${ctld:-stopped}  slurmd: ${slurmd:-stopped}  node $(hostname -s): ${state:-unknown}"
  [ -n "$munge" ] && [ -n "$ctld" ] && [ -n "$slurmd" ] && [[ "$state" =~ ^(idle|mixed|allocated|completing) ]]
}

start() {
  need_root
  install_packages
  local changed=0
  write_conf && changed=1
  start_munge
  if [ "$changed" = 1 ]; then  # a new slurm.conf: daemons that run must read it
    stop_daemon slurmd "$RUN/slurmd.pid"
    stop_daemon slurmctld "$RUN/slurmctld.pid"
  fi
  if [ -z "$(alive_pid "$RUN/slurmctld.pid" || true)" ]; then
    slurmctld || die "slurmctld did not start (see $LOGS/slurmctld.log)"
  fi
  if [ -z "$(alive_pid "$RUN/slurmd.pid" || true)" ]; then
    slurmd || die "slurmd did not start (see $LOGS/slurmd.log)"
  fi
  local state=""
  for _ in $(seq 1 "$((WAIT_S * 2))"); do
    state="$(node_state || true)"
    case "$state" in
      idle*|mixed*|allocated*|completing*) status; return 0 ;;
      down*|drain*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $(hostname -s) not ready after ${WAIT_S}s (state: ${state:-no answer from slurmctld}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

stop_daemon() {  # name pidfile: SIGTERM the pid in the file, wait, then SIGKILL
  local pid
  pid="$(alive_pid "$2" || true)"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$2"; return 0; }
    sleep 0.25
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$2"
}

stop() {
  need_root
  stop_daemon slurmd "$RUN/slurmd.pid"
  stop_daemon slurmctld "$RUN/slurmctld.pid"
  stop_daemon munged "$MUNGE_PID"
  echo "stopped munged, slurmctld and slurmd"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
