#!/usr/bin/env bash
# routed.sh - routed throughput: switchboard's router against the kernel's.
#
# One client namespace (lan, 10.78.1.2/24, gateway 10.78.1.1) talks to one
# server namespace (wan, 10.78.2.2/24, gateway 10.78.2.1) through a router in
# between, without NAT (the server routes back, and must see 10.78.1.2 as its
# peer). The router is, one row each:
#
#   id      what routes between the two namespaces
#   sb      switchboard: `switchboard run` with two tap segments
#           (tap_offload = false, MTU 1500) and one router joining them; the
#           taps are moved into lan and wan
#   kernel  Linux forwarding (ip_forward=1) in a middle namespace, joined to
#           lan and wan by veth pairs with every offload off (TSO, GSO, GRO,
#           tx and rx checksum): 1500-byte frames, as on a plain tap
#   sbofl   switchboard as above with tap_offload = true (the default):
#           TSO super-frames routed whole (not in the default rows)
#   sbnapi  switchboard as sb with tap_napi_thread = true: the kernel
#           delivers what switchboard writes to a tap from a NAPI thread of
#           its own instead of inside the write (not in the default rows;
#           sboflnapi: the same with offloads)
#   kernelofl  Linux forwarding with veth offloads left on (GRO/TSO), the
#           reference for sbofl (not in the default rows)
#   vdel3   vde_l3 (vde2's userspace router) between two vde_switches, each
#           host's tap attached by vde_plug2tap; only if vde_l3 is installed
#
# Per row and run: iperf3 TCP, one stream for 10 s (receiver's rate, sender's
# retransmits), then an iperf3 UDP flood (-u -b 0, 64-byte payloads, 5 s):
# datagrams delivered per second, sent per second, and the loss the server
# reports. Runs are interleaved (every row once, then again), and the summary
# gives the median [min-max] over the runs and the ratio of each median to the
# kernel row's.
#
# Safety: every namespace and interface is named "rb-<tag>-*" and lives only
# inside namespaces this script creates and removes on exit (trap). Traffic
# stays between those namespaces (10.78.1.0/24 and 10.78.2.0/24). Processes
# are stopped by the PIDs recorded when they were started. Every wait and
# every measurement is bounded in time.
#
# Usage (root; needs /dev/net/tun, iproute2, iperf3, jq, ethtool; vde2 for
# the vdel3 row). From the project root:
#   bash benches/routed.sh            # 3 runs of every row
#   RB_RUNS=1 RB_TCP_SECS=3 bash benches/routed.sh   # a quick look
# Environment:
#   RB_RUNS (3)  RB_TCP_SECS (10)  RB_UDP_SECS (5)  RB_UDP_LEN (64)
#   RB_SCENARIOS ("sb kernel vdel3")  RB_OUT=dir keeps logs and JSON there
#   SWITCHBOARD (target/release/switchboard; built with cargo if missing)

set -uo pipefail

# ---------------------------------------------------------------- Configuration
RUNS=${RB_RUNS:-3}
TCP_SECS=${RB_TCP_SECS:-10}
UDP_SECS=${RB_UDP_SECS:-5}
UDP_LEN=${RB_UDP_LEN:-64}
SCENARIOS=${RB_SCENARIOS:-"sb kernel vdel3"}
OUT=${RB_OUT:-}
PORT=5201
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SB=${SWITCHBOARD:-$ROOT/target/release/switchboard}

TAG=$(printf '%04x' $(( ($$ ^ RANDOM) & 0xffff )))
P="rb-$TAG"      # prefix of every namespace and interface (at most 15 chars with suffixes)
TMPD=""; STATE_PIDS=""; STATE_NS=""; FIFO=""; SCN=""; RESULTS=""

BENCH_NAME=routed
# shellcheck source=netns-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

# hosts LAN_DEV WAN_DEV : lan and wan addresses, each with the router as its
# default gateway (so the wan host routes back: no NAT anywhere).
hosts() {
  addr "$P-lan" "$1" 10.78.1.2/24
  ip -n "$P-lan" route add default via 10.78.1.1
  addr "$P-wan" "$2" 10.78.2.2/24
  ip -n "$P-wan" route add default via 10.78.2.1
}

# offloads_off NS DEV : no TSO/GSO/GRO and no checksum offload, so DEV carries
# 1500-byte frames with real checksums, as a tap without IFF_VNET_HDR does.
offloads_off() {
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off rx off >/dev/null 2>&1 ||
    { warn "ethtool -K $2 failed"; return 1; }
}

has_link() { ip -n "$1" link show "$2"; }

setup_sb() { sb_router false "switchboard router (taps)"; }
setup_sbofl() { sb_router true "switchboard router, offloads"; }
setup_sbnapi() { sb_router false "switchboard router, NAPI thread" true; }
setup_sboflnapi() { sb_router true "switchboard, offloads, NAPI thread" true; }

# sb_router OFFLOAD LABEL : switchboard routing between two tap segments.
sb_router() {
  local r="$P-rt" conf="$TMPD/${SCN}switchboard.toml" ctl="$TMPD/${SCN}control"
  mk_ns "$P-lan"; mk_ns "$r"; mk_ns "$P-wan"
  cat >"$conf" <<EOF
control = "$ctl"

[segments.lan]
taps = ["$P-l0"]
tap_offload = $1
tap_napi_thread = ${3:-false}
mtu = 1500

[segments.wan]
taps = ["$P-w0"]
tap_offload = $1
tap_napi_thread = ${3:-false}
mtu = 1500

[routers.gw.interfaces.lan]
segment = "lan"
addresses = ["10.78.1.1/24"]

[routers.gw.interfaces.wan]
segment = "wan"
addresses = ["10.78.2.1/24"]
EOF
  spawn switchboard "$r" "$SB" run "$conf"
  wait_for "switchboard's control socket" 10 test -S "$ctl"
  wait_for "tap $P-l0" 10 has_link "$r" "$P-l0"
  wait_for "tap $P-w0" 10 has_link "$r" "$P-w0"
  ip -n "$r" link set "$P-l0" netns "$P-lan"
  ip -n "$r" link set "$P-w0" netns "$P-wan"
  if [ "$1" = false ]; then
    # Plain taps: no GRO either (it would merge frames on a NAPI tap), as on
    # the kernel row's veths.
    ip netns exec "$P-lan" ethtool -K "$P-l0" gro off >/dev/null 2>&1 || warn "ethtool gro off failed"
    ip netns exec "$P-wan" ethtool -K "$P-w0" gro off >/dev/null 2>&1 || warn "ethtool gro off failed"
  fi
  hosts "$P-l0" "$P-w0"
  LABEL=$2
}

setup_kernel() { kernel_router off "kernel forwarding, no offload"; }
setup_kernelofl() { kernel_router on "kernel forwarding, offloads"; }

# kernel_router on|off LABEL : Linux forwarding between two veth pairs.
kernel_router() {
  local r="$P-rt"
  mk_ns "$P-lan"; mk_ns "$r"; mk_ns "$P-wan"
  ip link add name "$P-l0" netns "$P-lan" type veth peer name "$P-l1" netns "$r"
  ip link add name "$P-w0" netns "$P-wan" type veth peer name "$P-w1" netns "$r"
  if [ "$1" = off ]; then
    offloads_off "$P-lan" "$P-l0"; offloads_off "$r" "$P-l1"
    offloads_off "$r" "$P-w1"; offloads_off "$P-wan" "$P-w0"
  fi
  addr "$r" "$P-l1" 10.78.1.1/24
  addr "$r" "$P-w1" 10.78.2.1/24
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
  hosts "$P-l0" "$P-w0"
  LABEL=$2
}

# Debian's vde_l3 (vde2 2.3.2) walks an uninitialised neighbour-list pointer
# on the first forwarded packet; MALLOC_PERTURB_=255 makes fresh malloc memory
# zero, which avoids the crash (the team's peers.sh does the same).
setup_vdel3() {
  local r="$P-rt" sl="$TMPD/${SCN}lan.vde" sw="$TMPD/${SCN}wan.vde"
  mk_ns "$P-lan"; mk_ns "$r"; mk_ns "$P-wan"
  spawn vde-lan "$r" vde_switch -s "$sl"
  spawn vde-wan "$r" vde_switch -s "$sw"
  wait_for "lan vde_switch" 10 test -S "$sl/ctl"
  wait_for "wan vde_switch" 10 test -S "$sw/ctl"
  # (its -v takes the netmask dotted: "/24" is refused)
  spawn vde_l3 "$r" env MALLOC_PERTURB_=255 vde_l3 -v "$sl:10.78.1.1/255.255.255.0" \
    -v "$sw:10.78.2.1/255.255.255.0"
  sleep 0.3
  ours "$SPAWNED_PID" || { warn "vde_l3 exited: $(head -1 "$TMPD/${SCN}vde_l3.log")"; return 1; }
  spawn plug-lan "$P-lan" vde_plug2tap -s "$sl" "$P-l0"
  spawn plug-wan "$P-wan" vde_plug2tap -s "$sw" "$P-w0"
  wait_for "tap $P-l0" 5 has_link "$P-lan" "$P-l0"
  wait_for "tap $P-w0" 5 has_link "$P-wan" "$P-w0"
  hosts "$P-l0" "$P-w0"
  LABEL="vde_l3 (userspace)"
}

# ------------------------------------------------------------- Measurements
# jqnum FILE EXPR [DECIMALS] : EXPR on an iperf3 JSON report, or "fail".
jqnum() {
  local v
  v=$(jq -r "if (.error // null) != null then \"fail\" else ($2) end" "$1" 2>/dev/null) || v=fail
  [ -n "$v" ] && [ "$v" != null ] || v=fail
  if [ -n "${3:-}" ] && [[ $v =~ ^[0-9.eE+-]+$ ]]; then printf "%.${3}f\n" "$v"; else echo "$v"; fi
}

# iperf NAME SECS ARGS... : one-shot server in wan, client in lan; JSON to
# $TMPD/$SCN$NAME.json; sets PEER to the address the server saw.
iperf() {
  local name=$1 secs=$2 srv; shift 2
  spawn "$name-srv" "$P-wan" iperf3 -s -1 -p "$PORT" --forceflush
  srv=$SPAWNED_PID
  if wait_for "iperf3 server" 5 ip netns exec "$P-wan" sh -c "ss -Hltn 'sport = :$PORT' | grep -q ."; then
    run_bounded $(( secs + 20 )) "$P-lan" \
      iperf3 -c 10.78.2.2 -p "$PORT" -t "$secs" -J "$@" >"$TMPD/$SCN$name.json" 2>&1
  fi
  stop_pids "$srv"
  PEER=$(sed -n 's/.*Accepted connection from \([0-9.]*\).*/\1/p' "$TMPD/$SCN$name-srv.log" | head -1)
  [ -n "$PEER" ] || PEER=-
}

# measure RUN ID : TCP then UDP; one row to results.tsv.
measure() {
  local run=$1 id=$2 tcp retr udp sent loss src f
  run_bounded 8 "$P-lan" ping -n -c 3 -i 0.2 -W 1 -w 4 10.78.2.2 >/dev/null 2>&1 ||
    warn "$LABEL: warm-up ping got no reply"
  iperf tcp "$TCP_SECS"
  src=$PEER
  f="$TMPD/${SCN}tcp.json"
  tcp=$(jqnum "$f" '.end.sum_received.bits_per_second / 1e9' 3)
  retr=$(jqnum "$f" '.end.sum_sent.retransmits // "-"')
  iperf udp "$UDP_SECS" -u -b 0 -l "$UDP_LEN"
  [ "$src" = - ] && src=$PEER
  f="$TMPD/${SCN}udp.json"
  udp=$(jqnum "$f" '(.end.sum_received.packets - .end.sum_received.lost_packets) / .end.sum_sent.seconds / 1000' 1)
  sent=$(jqnum "$f" '.end.sum_sent.packets / .end.sum_sent.seconds / 1000' 1)
  loss=$(jqnum "$f" '.end.sum_received.lost_percent' 1)
  [ "$src" != - ] && [ "$src" != 10.78.1.2 ] && warn "$LABEL: server saw peer $src, expected 10.78.1.2"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$id" "$LABEL" "$tcp" "$retr" "$udp" "$sent" \
    "$loss" "$src" >>"$RESULTS"
}

# ------------------------------------------------------------------- Output
ROW_FMT='%-30.30s %8s %6s %8s %8s %6s  %s\n'
print_run() {
  echo; echo "== run $1 of $RUNS =="
  printf "$ROW_FMT" router "TCP" "TCP" "UDP64" "UDP64" "UDP64" "server"
  printf "$ROW_FMT" "" "Gbit/s" "retr" "kpps" "sent" "loss%" "saw peer"
  awk -F'\t' -v r="$1" -v fmt="$ROW_FMT" '$1 == r { printf fmt, $3, $4, $5, $6, $7, $8, $9 }' "$RESULTS"
}

# stat_of ID COLUMN DECIMALS -> "median min max" over the runs, or fail.
stat_of() {
  awk -F'\t' -v id="$1" -v c="$2" '$2 == id && $c ~ /^[0-9.]+$/ { print $c }' "$RESULTS" | sort -g |
    awk -v d="$3" '{ v[NR] = $1 } END { if (NR == 0) { print "fail fail fail"; exit }
         m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         f = "%." d "f %." d "f %." d "f\n"; printf f, m, v[1], v[NR] }'
}

# ratio A B : A / B as " 0.123x", or n/a.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.3fx", a / b
    else printf "n/a" }'
}

print_summary() {
  local id label tcp udp loss ktcp kudp med lo hi
  echo; echo "== median [min-max] over $RUNS runs; ratios of medians vs the kernel row =="
  printf '%-30.30s %-22s %-20s %-16s %9s %9s\n' router "TCP Gbit/s" "UDP64 kpps" "UDP64 loss%" \
    "TCP/kern" "UDP/kern"
  read -r ktcp _ _ < <(stat_of kernel 4 3)
  read -r kudp _ _ < <(stat_of kernel 6 1)
  for id in $SCENARIOS; do
    label=$(awk -F'\t' -v id="$id" '$2 == id { print $3; exit }' "$RESULTS")
    [ -n "$label" ] || continue
    read -r med lo hi < <(stat_of "$id" 4 3); tcp="$med [$lo-$hi]"; [ "$med" = fail ] && tcp=fail
    read -r med lo hi < <(stat_of "$id" 6 1); udp="$med [$lo-$hi]"; [ "$med" = fail ] && udp=fail
    read -r med lo hi < <(stat_of "$id" 8 1); loss="$med [$lo-$hi]"; [ "$med" = fail ] && loss=fail
    printf '%-30.30s %-22s %-20s %-16s %9s %9s\n' "$label" "$tcp" "$udp" "$loss" \
      "$(ratio "$(stat_of "$id" 4 3 | cut -d' ' -f1)" "$ktcp")" \
      "$(ratio "$(stat_of "$id" 6 1 | cut -d' ' -f1)" "$kudp")"
  done
}

# ---------------------------------------------------------------------- Main
main() {
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  [ "$(id -u)" = 0 ] || { echo "routed.sh: must run as root (network namespaces, taps)" >&2; exit 2; }
  [ -c /dev/net/tun ] || { echo "routed.sh: /dev/net/tun is missing" >&2; exit 2; }
  local b missing=""
  for b in ip ss iperf3 ping jq ethtool setsid timeout; do
    command -v "$b" >/dev/null 2>&1 || missing+=" $b"
  done
  if [ -n "$missing" ]; then
    echo "routed.sh: missing tools:$missing" >&2
    echo "install with: apt-get install -y iproute2 iperf3 iputils-ping jq ethtool util-linux coreutils vde2" >&2
    exit 2
  fi
  if [[ " $SCENARIOS " == *" vdel3 "* ]] && ! command -v vde_l3 >/dev/null 2>&1; then
    log "vde_l3 is not installed (apt-get install vde2): no vdel3 row"
    SCENARIOS=${SCENARIOS//vdel3/}
  fi
  if [[ " $SCENARIOS " == *" sb"* ]] && [ ! -x "$SB" ]; then
    log "building $SB"
    (cd "$ROOT" && cargo build --release --bin switchboard) >&2 ||
      { echo "routed.sh: cannot build switchboard" >&2; exit 2; }
  fi

  TMPD=$(mktemp -d -t rb-bench.XXXXXX) || exit 2
  STATE_PIDS="$TMPD/state.pids"; STATE_NS="$TMPD/state.netns"; RESULTS="$TMPD/results.tsv"
  FIFO="$TMPD/stdin.fifo"; mkfifo "$FIFO"
  : >"$STATE_PIDS"; : >"$STATE_NS"; : >"$RESULTS"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local t0=$SECONDS run id rc
  log "prefix $P; rows: $SCENARIOS; $RUNS runs; TCP ${TCP_SECS}s, UDP ${UDP_SECS}s x ${UDP_LEN}B"
  log "$(nproc) CPUs; iperf3 $(iperf3 --version | awk 'NR==1{print $2}'); kernel $(uname -r); $SB"
  for (( run = 1; run <= RUNS; run++ )); do
    for id in $SCENARIOS; do
      SCN="r$run-$id-"; LABEL=$id
      declare -F "setup_$id" >/dev/null || { warn "unknown row '$id' (skipped)"; continue; }
      # set -e inside the subshell: a failed setup step fails the row. The
      # label is passed back through a file because the subshell sets it.
      ( set -e; "setup_$id"; echo "$LABEL" >"$TMPD/label" ); rc=$?
      if [ "$rc" = 0 ]; then
        LABEL=$(cat "$TMPD/label")
        measure "$run" "$id"
      else
        warn "$id: setup failed (rc=$rc); logs:"
        for b in "$TMPD/$SCN"*.log; do [ -s "$b" ] && tail -5 "$b" | sed 's/^/    /' >&2; done
        printf '%s\t%s\t%s\tfail\t-\tfail\tfail\tfail\t-\n' "$run" "$id" "$id (setup failed)" >>"$RESULTS"
      fi
      teardown
      log "run $run: $id done"
    done
    print_run "$run"
  done
  print_summary
  echo; echo "total wall time: $(( SECONDS - t0 ))s"
}

main "$@"
