#!/usr/bin/env bash
# A one-node Slurm on this machine, for the tests and benchmarks that launch torchfit with
# `srun` (see ../shared/notes/one-node-slurm.md for what was checked by hand).
#
#   scripts/slurm.sh          # start (the default): up, or a quick no-op when already up
#   scripts/slurm.sh stop     # stop the daemons that this script started, by their pids
#   scripts/slurm.sh status   # say whether the node is up
#
# start installs slurm-wlm and munge with apt-get when they are missing (root only), writes a
# munge key and a minimal /etc/slurm/slurm.conf (no cgroups, no systemd: they are absent on
# CI machines and containers), starts munged, slurmctld and slurmd, and waits (bounded) until
# `sinfo` shows the node idle. Whatever it cannot do, it says in one line on stderr and exits 1.
set -euo pipefail

host=$(hostname -s)
conf=/etc/slurm/slurm.conf
# The pids of the daemons this script started, so that `stop` never touches others (another
# user's Slurm, or a systemd-managed one) and never goes by process name.
state=/run/torchfit-slurm
# Written into slurm.conf so that a later run knows the file is ours to rewrite; a slurm.conf
# without it belongs to someone else and is used as it is.
marker="# Written by torchfit's scripts/slurm.sh"
wait_seconds=${SLURM_SH_WAIT:-30}

fail() {
  echo "slurm.sh: $*" >&2
  exit 1
}

# The node's state as sinfo reports it (idle, mixed, down*, drained, ...), or nothing when
# slurmctld does not answer within $1 seconds (default 5): sinfo keeps retrying when
# slurmctld is gone.
node_state() {
  timeout "${1:-5}" sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1 || true
}

node_up() {
  case "$(node_state "${1:-5}")" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

# "pid starttime" of a live process; the start time (field 22 of /proc/PID/stat, counted
# after the command name, which may hold spaces) tells a reused pid from the one recorded.
proc_id() {
  [[ $1 =~ ^[0-9]+$ ]] && [ -r "/proc/$1/stat" ] || return 1
  echo "$1 $(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f20)"
}

# proc_id of the process named in a daemon's pidfile, if it is alive.
pid_record() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  proc_id "$pid"
}

# True while the process recorded in our state file is alive and is the same process.
recorded_alive() {
  local want
  want=$(cat "$state/$1.pid" 2>/dev/null) || return 1
  [ -n "$want" ] && [ "$(proc_id "${want%% *}")" = "$want" ]
}

# A setting of slurm.conf (ours or someone else's), or the given default.
conf_value() {
  local v
  v=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/Ip" "$conf" 2>/dev/null | tail -n 1)
  echo "${v:-$2}"
}

# Waits up to $2 seconds for the file $1 to hold the pid of a live process.
wait_pidfile() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    pid_record "$1" >/dev/null && return 0
    sleep 0.1
  done
  return 1
}

last_log_line() {
  [ -f "$1" ] && tail -n 1 "$1" | cut -c1-200 || echo "no log at $1"
}

install_packages() {
  [ "$(id -u)" -eq 0 ] || fail "Slurm is not installed and installing it needs root (apt-get install slurm-wlm munge)"
  command -v apt-get >/dev/null || fail "Slurm is not installed and there is no apt-get to install it"
  local log
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists (no candidate), and old lists point at files the
  # mirror no longer has: update in both cases, else skip it (it is most of the time).
  if ! apt-cache policy slurm-wlm 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -qq >"$log" 2>&1 || fail "apt-get update failed: $(tail -n 1 "$log")"
  fi
  if ! apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$log" 2>&1; then
    apt-get update -qq >"$log" 2>&1 || fail "apt-get update failed: $(tail -n 1 "$log")"
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$log" 2>&1 ||
      fail "apt-get install slurm-wlm munge failed: $(tail -n 1 "$log")"
  fi
  rm -f "$log"
}

write_munge_key() {
  local key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    # 1 KiB of random bytes, readable by the munge user alone (munged refuses anything laxer).
    install -d -m 0700 -o munge -g munge /etc/munge
    (umask 077 && dd if=/dev/urandom of="$key" bs=1024 count=1 status=none)
  fi
  chown munge:munge "$key"
  chmod 0400 "$key"
}

write_slurm_conf() {
  if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
    echo "slurm.sh: using the existing $conf (not written by this script)" >&2
    return
  fi
  local cpus mem
  cpus=$(nproc)
  # RealMemory a bit under the machine's (MiB): slurmd drains a node that has less than it.
  mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)
  mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
  cat >"$conf.new" <<EOF
$marker (one node: $host; rewritten by each start).
ClusterName=torchfit
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
# No cgroups and no systemd on CI machines: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that went down (a restart, a slow slurmd) comes back by itself once it registers.
ReturnToService=2
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
# OverSubscribe: jobs that ask (srun --oversubscribe) share cores, so tests can run while
# another job holds them.
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  mv "$conf.new" "$conf"
}

start_munged() {
  if timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
    return # a munged is already answering (ours or the system's)
  fi
  install -d -m 0755 -o munge -g munge /run/munge
  install -d -m 0700 -o munge -g munge /var/lib/munge /var/log/munge
  # As the munge user, who owns the key; munged daemonises and writes its pidfile.
  runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1 ||
    fail "munged did not start: $(last_log_line /var/log/munge/munged.log)"
  wait_pidfile /run/munge/munged.pid 5 || fail "munged did not write /run/munge/munged.pid"
  pid_record /run/munge/munged.pid >"$state/munged.pid"
}

# start_daemon NAME PIDFILE LOGFILE: starts slurmctld or slurmd unless the process in its
# pidfile is alive, and records the pid of what it started.
start_daemon() {
  local name=$1 pidfile=$2 log=$3
  if pid_record "$pidfile" >/dev/null; then
    return
  fi
  "/usr/sbin/$name" >/dev/null 2>&1 || fail "$name did not start: $(last_log_line "$log")"
  wait_pidfile "$pidfile" 10 || fail "$name did not come up: $(last_log_line "$log")"
  pid_record "$pidfile" >"$state/$name.pid"
}

start() {
  local began=$SECONDS
  # A short probe: a running slurmctld answers in milliseconds, and when it is not running
  # what follows starts only what is missing anyway.
  if command -v sinfo >/dev/null && node_up 2; then
    echo "slurm.sh: Slurm already up (node $host $(node_state))"
    return
  fi
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null ||
    ! command -v srun >/dev/null; then
    install_packages
  fi
  [ "$(id -u)" -eq 0 ] || fail "Slurm is installed but not running, and starting its daemons needs root"
  mkdir -p "$state"
  write_munge_key
  write_slurm_conf
  start_munged
  start_daemon slurmctld "$(conf_value SlurmctldPidFile /run/slurmctld.pid)" "$(conf_value SlurmctldLogFile /var/log/slurm/slurmctld.log)"
  start_daemon slurmd "$(conf_value SlurmdPidFile /run/slurmd.pid)" "$(conf_value SlurmdLogFile /var/log/slurm/slurmd.log)"
  local i s=""
  for ((i = 0; i < wait_seconds * 2; i++)); do
    s=$(node_state)
    case "$s" in
      idle | mixed | allocated | completing)
        echo "slurm.sh: Slurm up in $((SECONDS - began)) s (node $host $s)"
        return
        ;;
      # down or drained but answering (not `down*`, which is slurmd not yet registered): a
      # node left so by an earlier run; bring it back.
      down | drained | draining | drain | fail)
        timeout 5 scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        ;;
    esac
    sleep 0.5
  done
  fail "node $host not idle after ${wait_seconds} s (sinfo: ${s:-no answer}; slurmd log: $(last_log_line "$(conf_value SlurmdLogFile /var/log/slurm/slurmd.log)"))"
}

stop() {
  local name found=0
  for name in slurmd slurmctld munged; do
    [ -f "$state/$name.pid" ] || continue
    found=1
    if recorded_alive "$name"; then
      local pid i
      pid=$(cut -d' ' -f1 "$state/$name.pid")
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
      done
      [ -d "/proc/$pid" ] && echo "slurm.sh: $name ($pid) still running after 10 s" >&2
      echo "slurm.sh: stopped $name ($pid)"
    fi
    rm -f "$state/$name.pid"
  done
  [ "$found" -eq 1 ] || echo "slurm.sh: no daemon started by this script is recorded in $state"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status)
    if command -v sinfo >/dev/null && node_up; then
      echo "slurm.sh: up (node $host $(node_state))"
    else
      s=$(command -v sinfo >/dev/null && node_state || echo 'not installed')
      fail "not up (sinfo: ${s:-no answer})"
    fi
    ;;
  *) fail "usage: scripts/slurm.sh [start|stop|status]" ;;
esac
