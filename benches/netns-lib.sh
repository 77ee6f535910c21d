# netns-lib.sh - shell helpers shared by benches/routed.sh and benches/nat.sh:
# logging, spawning and stopping processes by recorded PID, namespaces with
# a recorded list for cleanup, bounded waits. Sourced, not run; the caller
# sets BENCH_NAME (the log prefix) and the state variables TMPD, STATE_PIDS,
# STATE_NS, FIFO and SCN before using them.

log()  { printf '[${BENCH_NAME}] %s\n' "$*" >&2; }
warn() { printf '[${BENCH_NAME}] WARNING: %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }

# wait_for DESC SECONDS CMD... : poll CMD every 50 ms, give up after SECONDS.
wait_for() {
  local desc=$1 i n=$(( $2 * 20 )); shift 2
  for (( i = 0; i < n; i++ )); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  warn "timed out waiting for $desc"
  return 1
}

# ------------------------------------------------------ Resource bookkeeping
# spawn LABEL NS CMD... : CMD in the background inside NS, in a session of its
# own; output to a log; stdin a FIFO that never ends (vde_switch exits on
# stdin EOF). Sets SPAWNED_PID and records it for cleanup.
spawn() {
  local label=$1 ns=$2; shift 2
  setsid ip netns exec "$ns" "$@" <>"$FIFO" >"$TMPD/$SCN$label.log" 2>&1 &
  SPAWNED_PID=$!
  echo "$SPAWNED_PID" >>"$STATE_PIDS"
}

# ours PID : alive, not a zombie, and still the leader of the session spawn()
# made for it (so a recycled PID is never signalled).
ours() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  set -- "$1" ${st##*) }
  [ "$2" != Z ] && [ "$5" = "$1" ]
}

# stop_pids PID... : TERM their process groups, a bounded wait, then KILL.
stop_pids() {
  local pid i alive
  for pid in "$@"; do ours "$pid" && kill -TERM -- "-$pid" 2>/dev/null; done
  for (( i = 0; i < 30; i++ )); do
    alive=0
    for pid in "$@"; do ours "$pid" && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for pid in "$@"; do ours "$pid" && kill -KILL -- "-$pid" 2>/dev/null; done
  for pid in "$@"; do wait "$pid" 2>/dev/null; done
  return 0
}

# mk_ns NAME : a namespace with lo up and IPv6 off.
mk_ns() {
  ip netns add "$1" || return 1
  echo "$1" >>"$STATE_NS"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 || true
}

# teardown : stop every recorded process, delete every recorded namespace
# (which removes the taps and veths inside).
teardown() {
  if [ -n "$STATE_PIDS" ] && [ -s "$STATE_PIDS" ]; then
    # shellcheck disable=SC2046
    stop_pids $(cat "$STATE_PIDS")
    : >"$STATE_PIDS"
  fi
  if [ -n "$STATE_NS" ] && [ -s "$STATE_NS" ]; then
    while read -r ns; do ip netns del "$ns" 2>/dev/null; done < <(tac "$STATE_NS")
    : >"$STATE_NS"
  fi
}

cleanup() {
  trap - EXIT INT TERM
  teardown
  if [ -n "$OUT" ] && [ -n "$TMPD" ] && [ -d "$TMPD" ]; then
    mkdir -p "$OUT" && cp -f "$TMPD"/*.log "$TMPD"/*.json "$TMPD"/*.tsv "$TMPD"/*.toml "$OUT"/ 2>/dev/null
  fi
  [ -n "$TMPD" ] && rm -rf "$TMPD"
}

# run_bounded SECS NS CMD... : CMD inside NS, killed after SECS; a recorded
# background job so that an interrupt stops it too.
run_bounded() {
  local secs=$1 ns=$2; shift 2
  setsid timeout "$secs" ip netns exec "$ns" "$@" <>"$FIFO" &
  echo "$!" >>"$STATE_PIDS"
  wait "$!"
}

# ------------------------------------------------------------- Topologies
addr() { ip -n "$1" addr add "$3" dev "$2" && ip -n "$1" link set "$2" up; }

