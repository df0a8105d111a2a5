#!/usr/bin/env bash
# A real single-host Slurm for hpctl's tests: munged, slurmctld and two slurmd daemons (nodes n1
# and n2 on this host, Debian's build has MULTIPLE_SLURMD), so `--nodes=2` jobs really span two
# slurmd's. Runs as root on a fresh machine without systemd (CI containers, sandboxes).
#
#   tests/slurm/cluster.sh start    # installs slurm-wlm + munge if missing, starts, waits for idle
#   tests/slurm/cluster.sh status   # scontrol ping, sinfo, squeue; exit 0 when the controller answers
#   tests/slurm/cluster.sh stop     # kills only the daemons this script started (pid files)
#   tests/slurm/cluster.sh stop-controller   # only slurmctld (fault tests); jobs keep running on the slurmd's
#   tests/slurm/cluster.sh start-controller  # slurmctld again, recovering its saved job state
#   tests/slurm/cluster.sh pause-controller  # SIGSTOP slurmctld: it hangs, requests wait unanswered
#   tests/slurm/cluster.sh resume-controller # SIGCONT: it goes on with what waited
#
# State, spool, logs and pid files live under $HPCTL_SLURM_DIR (default /tmp/hpctl-slurm).
# Clients (sbatch, squeue, ...) read /etc/slurm/slurm.conf, the compiled-in default, so this
# script installs its config there, but never over a slurm.conf it did not write.
set -euo pipefail

BASE="${HPCTL_SLURM_DIR:-/tmp/hpctl-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# written by hpctl tests/slurm/cluster.sh"
NODES=(n1 n2)
HOST="$(hostname -s)"

say() { echo "[cluster.sh] $*" >&2; }

install_packages() {
  command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 && return 0
  say "installing slurm-wlm and munge from Debian (about 10 s)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_answers; then return 0; fi   # a munged we did not start: use it, never stop it
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  # munged refuses to run as root; it daemonizes and writes /run/munge/munged.pid.
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 50); do munge_answers && break; sleep 0.1; done
  munge_answers || { say "munged does not answer; see /var/log/munge/munged.log"; return 1; }
  cp /run/munge/munged.pid "$BASE/munged.pid"
}

# One field of `slurmd -C` (this host's real topology): copying it avoids slurmd's
# "Node reconfigured socket/core boundaries" (a bare CPUs=2 is read as two sockets).
hw_field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$HW"; }

write_conf() {
  HW="$(slurmd -C | head -1)"
  local topo
  topo="CPUs=$(hw_field CPUs) Boards=$(hw_field Boards) SocketsPerBoard=$(hw_field SocketsPerBoard)"
  topo="$topo CoresPerSocket=$(hw_field CoresPerSocket) ThreadsPerCore=$(hw_field ThreadsPerCore)"
  topo="$topo RealMemory=$(hw_field RealMemory)"
  cat >"$BASE/slurm.conf" <<CONF
$MARKER
ClusterName=hpctl-ci
# The address in parentheses spares slurmctld and the clients a DNS lookup of this host.
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=5
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# CR_Core: memory is not consumable, so jobs without --mem do not each take a whole node.
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/jobcomp.txt
AccountingStorageType=accounting_storage/none
JobRequeue=1
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to squeue / scontrol for this many seconds.
MinJobAge=300
KillWait=5
# Schedule often: a requeued job becomes eligible seconds later and should start at once.
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmdTimeout=60
StateSaveLocation=$BASE/state
# Several slurmd's on one host: each has its own name (slurmd -N), port, spool, pid and log.
SlurmdSpoolDir=$BASE/spool/%n
SlurmdPidFile=$BASE/slurmd-%n.pid
SlurmdLogFile=$BASE/log/slurmd-%n.log
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmctldPort=6817
SlurmdPort=6818
# Each node advertises the whole machine: CPUs are oversubscribed, which is fine for tests.
NodeName=n[1-${#NODES[@]}] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[17001-$((17000 + ${#NODES[@]}))] $topo State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  if [ -e "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
    say "$CONF exists and was not written by this script; refusing to replace it"
    return 1
  fi
  mkdir -p "$(dirname "$CONF")"
  cp "$BASE/slurm.conf" "$CONF"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

running() {
  local n
  pid_alive "$BASE/slurmctld.pid" || return 1
  for n in "${NODES[@]}"; do pid_alive "$BASE/slurmd-$n.pid" || return 1; done
  scontrol ping >/dev/null 2>&1
}

wait_idle() {
  local idle=0
  for _ in $(seq 150); do
    idle="$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -c ' idle$' || true)"
    [ "$idle" -ge "${#NODES[@]}" ] && return 0
    sleep 0.2
  done
  say "nodes not idle after 30 s; see $BASE/log"
  sinfo -N >&2 || true
  return 1
}

start() {
  install_packages
  if running; then say "already running"; wait_idle; return; fi
  stop_daemons
  rm -rf "$BASE/state" "$BASE/spool"
  mkdir -p "$BASE/state" "$BASE/log"
  local n
  for n in "${NODES[@]}"; do mkdir -p "$BASE/spool/$n"; done   # slurmd does not create it
  start_munge
  write_conf
  slurmctld -i   # daemonizes; -i: ignore errors reading the (empty) state
  for n in "${NODES[@]}"; do slurmd -N "$n"; done
  wait_idle
  sinfo -N
}

# Send SIGTERM to the daemon in each pid file and wait for it to go; only our own daemons.
kill_pidfiles() {
  local f pids=()
  for f in "$@"; do
    if pid_alive "$f"; then pids+=("$(cat "$f")"); kill "$(cat "$f")" 2>/dev/null || true; fi
    rm -f "$f"
  done
  for _ in $(seq 50); do
    local alive=0 p
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
}

stop_daemons() { kill_pidfiles "$BASE"/slurmd-*.pid "$BASE/slurmctld.pid"; }

stop() {
  stop_daemons
  kill_pidfiles "$BASE/munged.pid"   # only present when this script started munged
}

# Fault tests: slurmctld alone goes away (SIGTERM: it saves its state) and comes back with that
# state (no -i), while munged and the slurmd's, and so the jobs they run, carry on.
stop_controller() { kill_pidfiles "$BASE/slurmctld.pid"; }

start_controller() {
  if pid_alive "$BASE/slurmctld.pid"; then say "slurmctld already running"; return 0; fi
  slurmctld
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && return 0; sleep 0.1; done
  say "slurmctld does not answer after 10 s; see $BASE/log/slurmctld.log"
  return 1
}

# A hung slurmctld (SIGSTOP): connections are still accepted, so clients send and wait for a reply.
signal_controller() {
  pid_alive "$BASE/slurmctld.pid" || { say "slurmctld is not running"; return 1; }
  kill "-$1" "$(cat "$BASE/slurmctld.pid")"
}

status() {
  scontrol ping
  sinfo -N
  squeue
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  stop-controller) stop_controller ;;
  start-controller) start_controller ;;
  pause-controller) signal_controller STOP ;;
  resume-controller) signal_controller CONT ;;
  *) echo "usage: $0 start|stop|status|{stop,start,pause,resume}-controller" >&2; exit 2 ;;
esac
