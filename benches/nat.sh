#!/usr/bin/env bash
# nat.sh - NAT throughput: switchboard's masquerading router against the kernel's.
#
# One client namespace (lan, 10.79.1.2/24, gateway 10.79.1.1) talks to one
# server namespace (wan, 10.79.2.2/24) through a router that masquerades
# 10.79.1.0/24 behind its wan address 10.79.2.1. The wan namespace has no
# route back to 10.79.1.0/24, so every reply works only through NAT, and the
# server must see 10.79.2.1 as its peer. The router is, one row each:
#
#   id      what translates between the two namespaces
#   sb      switchboard: `switchboard run` with two tap segments
#           (tap_offload = false, MTU 1500) and one router joining them with
#           a [[routers.gw.masquerade]] rule out of its wan interface; the
#           taps are moved into lan and wan
#   sbnapi  the same with tap_napi_thread = true: the kernel delivers what
#           switchboard writes to a tap from a NAPI thread (not a default row)
#   kernel  Linux in a middle namespace: ip_forward=1 and
#           `iptables -t nat -A POSTROUTING -s 10.79.1.0/24 -o WAN -j MASQUERADE`
#           (nft when iptables is missing), joined to lan and wan by veth
#           pairs with every offload off (TSO, GSO, GRO, tx and rx checksum):
#           1500-byte frames, as on a plain tap (peers.sh calls this knat1500)
#
# Per row and run:
#   1. iperf3 TCP, one stream for 10 s, lan -> wan (receiver's rate, sender's
#      retransmits, the peer address the server saw);
#   2. an iperf3 UDP flood (-u -b 0, 64-byte payloads, 5 s) lan -> wan:
#      datagrams delivered per second, sent per second, and the loss the
#      server reports; beside it, on a second port, a slow established TCP
#      flow (-b 1M, started 2 s before the flood and ending 1 s after it):
#      its receiver's average rate, and its slowest one-second interval at
#      the receiver while the flood ran. It must survive: a NAT table or queue that loses an
#      established flow under a flood of new packets shows up here as a
#      failed or stalled stream.
# Runs are interleaved (every row once, then again), and the summary gives the
# median [min-max] over the runs and the ratio of each median to the kernel
# row's. For the sb row the router's NAT counters after the last run are
# printed too.
#
# Safety: every namespace and interface is named "nb-<tag>-*" and lives only
# inside namespaces this script creates and removes on exit (trap). Traffic
# stays between those namespaces (10.79.1.0/24 and 10.79.2.0/24). Processes
# are stopped by the PIDs recorded when they were started. Every wait and
# every measurement is bounded in time.
#
# Usage (root; needs /dev/net/tun, iproute2, iperf3, jq, ethtool, and iptables
# or nft for the kernel row). From the project root:
#   bash benches/nat.sh               # 3 runs of every row
#   NB_RUNS=1 NB_TCP_SECS=3 bash benches/nat.sh      # a quick look
# Environment:
#   NB_RUNS (3)  NB_TCP_SECS (10)  NB_UDP_SECS (5)  NB_UDP_LEN (64)
#   NB_SLOW_RATE (1M)  NB_SCENARIOS ("sb kernel")  NB_OUT=dir keeps logs and JSON
#   SWITCHBOARD (target/release/switchboard; built with cargo if missing)

set -uo pipefail

# ---------------------------------------------------------------- Configuration
RUNS=${NB_RUNS:-3}
TCP_SECS=${NB_TCP_SECS:-10}
UDP_SECS=${NB_UDP_SECS:-5}
UDP_LEN=${NB_UDP_LEN:-64}
SLOW_RATE=${NB_SLOW_RATE:-1M}
SCENARIOS=${NB_SCENARIOS:-"sb kernel"}
OUT=${NB_OUT:-}
PORT=5201
SLOW_PORT=5202
LAN_NET=10.79.1.0/24
LAN_IP=10.79.1.2
WAN_IP=10.79.2.2
OUTSIDE=10.79.2.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SB=${SWITCHBOARD:-$ROOT/target/release/switchboard}

TAG=$(printf '%04x' $(( ($$ ^ RANDOM) & 0xffff )))
P="nb-$TAG"      # prefix of every namespace and interface (at most 15 chars with suffixes)
TMPD=""; STATE_PIDS=""; STATE_NS=""; FIFO=""; SCN=""; RESULTS=""; NATTOOL=""

BENCH_NAME=nat
# shellcheck source=netns-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"

# hosts LAN_DEV WAN_DEV : the lan host routes by the router; the wan host has
# only its connected /24, so it can answer the masqueraded address and
# nothing behind it.
hosts() {
  addr "$P-lan" "$1" "$LAN_IP/24"
  ip -n "$P-lan" route add default via 10.79.1.1
  addr "$P-wan" "$2" "$WAN_IP/24"
}

# offloads_off NS DEV : no TSO/GSO/GRO and no checksum offload, so DEV carries
# 1500-byte frames with real checksums, as a tap without IFF_VNET_HDR does.
offloads_off() {
  ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off rx off >/dev/null 2>&1 ||
    { warn "ethtool -K $2 failed"; return 1; }
}

has_link() { ip -n "$1" link show "$2"; }

SB_CTL=""
setup_sb() { sb_nat false "switchboard masquerade (taps)"; }
setup_sbnapi() { sb_nat true "switchboard masquerade, NAPI thread"; }

# sb_nat NAPI LABEL : switchboard masquerading between two plain tap
# segments; NAPI true gives the taps a NAPI thread (tap_napi_thread).
sb_nat() {
  local r="$P-rt" conf="$TMPD/${SCN}switchboard.toml"
  SB_CTL="$TMPD/${SCN}control"
  mk_ns "$P-lan"; mk_ns "$r"; mk_ns "$P-wan"
  cat >"$conf" <<EOF
control = "$SB_CTL"

[segments.lan]
taps = ["$P-l0"]
tap_offload = false
tap_napi_thread = $1
mtu = 1500

[segments.wan]
taps = ["$P-w0"]
tap_offload = false
tap_napi_thread = $1
mtu = 1500

[routers.gw.interfaces.lan]
segment = "lan"
addresses = ["10.79.1.1/24"]

[routers.gw.interfaces.wan]
segment = "wan"
addresses = ["$OUTSIDE/24"]

[[routers.gw.masquerade]]
out = "wan"
sources = ["$LAN_NET"]
except = ["$LAN_NET"]
EOF
  spawn switchboard "$r" "$SB" run "$conf"
  wait_for "switchboard's control socket" 10 test -S "$SB_CTL"
  wait_for "tap $P-l0" 10 has_link "$r" "$P-l0"
  wait_for "tap $P-w0" 10 has_link "$r" "$P-w0"
  ip -n "$r" link set "$P-l0" netns "$P-lan"
  ip -n "$r" link set "$P-w0" netns "$P-wan"
  # Plain taps: no GRO either, as on the kernel row's veths.
  ip netns exec "$P-lan" ethtool -K "$P-l0" gro off >/dev/null 2>&1 || warn "ethtool gro off failed"
  ip netns exec "$P-wan" ethtool -K "$P-w0" gro off >/dev/null 2>&1 || warn "ethtool gro off failed"
  hosts "$P-l0" "$P-w0"
  LABEL=$2
}

setup_kernel() {
  local r="$P-rt"
  mk_ns "$P-lan"; mk_ns "$r"; mk_ns "$P-wan"
  ip link add name "$P-l0" netns "$P-lan" type veth peer name "$P-l1" netns "$r"
  ip link add name "$P-w0" netns "$P-wan" type veth peer name "$P-w1" netns "$r"
  offloads_off "$P-lan" "$P-l0"; offloads_off "$r" "$P-l1"
  offloads_off "$r" "$P-w1"; offloads_off "$P-wan" "$P-w0"
  addr "$r" "$P-l1" 10.79.1.1/24
  addr "$r" "$P-w1" "$OUTSIDE/24"
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
  case "$NATTOOL" in
    iptables)
      ip netns exec "$r" iptables -t nat -A POSTROUTING -s "$LAN_NET" ! -d "$LAN_NET" \
        -o "$P-w1" -j MASQUERADE ;;
    nft)
      ip netns exec "$r" nft -f - <<EOF
table ip nb {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $LAN_NET ip daddr != $LAN_NET oifname "$P-w1" masquerade
  }
}
EOF
      ;;
    *) warn "neither iptables nor nft"; return 1 ;;
  esac
  hosts "$P-l0" "$P-w0"
  LABEL="kernel MASQUERADE, no offload"
}

# ------------------------------------------------------------- Measurements
# jqnum FILE EXPR [DECIMALS] : EXPR on an iperf3 JSON report, or "fail".
jqnum() {
  local v
  v=$(jq -r "if (.error // null) != null then \"fail\" else ($2) end" "$1" 2>/dev/null) || v=fail
  [ -n "$v" ] && [ "$v" != null ] || v=fail
  if [ -n "${3:-}" ] && [[ $v =~ ^[0-9.eE+-]+$ ]]; then printf "%.${3}f\n" "$v"; else echo "$v"; fi
}

listening() { ip netns exec "$P-wan" sh -c "ss -Hltn 'sport = :$1' | grep -q ."; }

# server NAME PORT : a one-shot iperf3 server in wan; sets SRV to its PID.
server() {
  spawn "$1-srv" "$P-wan" iperf3 -s -1 -p "$2" --forceflush
  SRV=$SPAWNED_PID
  wait_for "iperf3 server on $2" 5 listening "$2"
}

# peer_of NAME : the address the server NAME saw, or "-".
peer_of() {
  local p
  p=$(sed -n 's/.*Accepted connection from \([0-9.]*\).*/\1/p' "$TMPD/$SCN$1-srv.log" | head -1)
  echo "${p:--}"
}

# slow_min FILE : the slowest one-second interval (Mbit/s) of the slow flow
# during the flood, from the server's own report (its text, which
# --get-server-output hands back inside the client's JSON), or "fail".
slow_min() {
  jq -r '.server_output_text // empty' "$1" 2>/dev/null |
    awk -v first=3 -v last=$(( 2 + UDP_SECS )) '
      /sec/ && !/sender|receiver/ && match($0, /[0-9.]+ [KMG]?bits\/sec/) {
        n++; split(substr($0, RSTART, RLENGTH), v, " ")
        r = v[1]; u = substr(v[2], 1, 1)
        if (u == "K") r /= 1e3; else if (u == "G") r *= 1e3; else if (u == "b") r /= 1e6
        if (n >= first && n <= last && (min == "" || r < min)) min = r
      }
      END { if (min == "") print "fail"; else printf "%.2f\n", min }'
}

# measure RUN ID : TCP, then the flood beside the slow flow; one row to
# results.tsv.
measure() {
  local run=$1 id=$2 tcp retr udp sent loss slow slowmin src f slowpid slow_secs
  run_bounded 8 "$P-lan" ping -n -c 3 -i 0.2 -W 1 -w 4 "$WAN_IP" >/dev/null 2>&1 ||
    warn "$LABEL: warm-up ping got no reply"

  server tcp "$PORT" &&
    run_bounded $(( TCP_SECS + 20 )) "$P-lan" \
      iperf3 -c "$WAN_IP" -p "$PORT" -t "$TCP_SECS" -J >"$TMPD/${SCN}tcp.json" 2>&1
  stop_pids "$SRV"
  src=$(peer_of tcp)
  f="$TMPD/${SCN}tcp.json"
  tcp=$(jqnum "$f" '.end.sum_received.bits_per_second / 1e9' 3)
  retr=$(jqnum "$f" '.end.sum_sent.retransmits // "-"')

  # The slow flow runs 2 s before, during and 1 s after the flood.
  slow_secs=$(( UDP_SECS + 3 ))
  slowpid=""
  if server slow "$SLOW_PORT"; then
    local slowsrv=$SRV
    spawn slow-cli "$P-lan" iperf3 -c "$WAN_IP" -p "$SLOW_PORT" -b "$SLOW_RATE" -t "$slow_secs" \
      -i 1 -J --get-server-output
    slowpid=$SPAWNED_PID
    sleep 2
  fi
  server udp "$PORT" &&
    run_bounded $(( UDP_SECS + 20 )) "$P-lan" \
      iperf3 -c "$WAN_IP" -p "$PORT" -t "$UDP_SECS" -u -b 0 -l "$UDP_LEN" -J \
      >"$TMPD/${SCN}udp.json" 2>&1
  stop_pids "$SRV"
  if [ -n "$slowpid" ]; then
    # Bounded: the client ends by itself after slow_secs.
    local i
    for (( i = 0; i < (slow_secs + 15) * 10; i++ )); do ours "$slowpid" || break; sleep 0.1; done
    stop_pids "$slowpid" "$slowsrv"
    cp -f "$TMPD/${SCN}slow-cli.log" "$TMPD/${SCN}slow.json"
  fi
  f="$TMPD/${SCN}udp.json"
  udp=$(jqnum "$f" '(.end.sum_received.packets - .end.sum_received.lost_packets) / .end.sum_sent.seconds / 1000' 1)
  sent=$(jqnum "$f" '.end.sum_sent.packets / .end.sum_sent.seconds / 1000' 1)
  loss=$(jqnum "$f" '.end.sum_received.lost_percent' 1)
  [ "$src" = - ] && src=$(peer_of udp)
  f="$TMPD/${SCN}slow.json"
  if [ -s "$f" ]; then
    slow=$(jqnum "$f" '.end.sum_received.bits_per_second / 1e6' 2)
    # Intervals 3..(2+UDP_SECS) are the flood's seconds (the flood starts
    # about 2 s in); their slowest as the receiver (the server) saw them.
    slowmin=$(slow_min "$f")
  else
    slow=fail; slowmin=fail
  fi
  [ "$src" != - ] && [ "$src" != "$OUTSIDE" ] && warn "$LABEL: server saw peer $src, expected $OUTSIDE"
  if [ "$id" = sb ] && [ -S "$SB_CTL" ]; then
    "$SB" ctl -c "$SB_CTL" --json routers >"$TMPD/${SCN}routers.json" 2>&1 || true
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$id" "$LABEL" "$tcp" "$retr" \
    "$udp" "$sent" "$loss" "$slow" "$slowmin" "$src" >>"$RESULTS"
}

# ------------------------------------------------------------------- Output
ROW_FMT='%-30.30s %8s %6s %8s %8s %6s %8s %8s  %s\n'
print_run() {
  echo; echo "== run $1 of $RUNS =="
  printf "$ROW_FMT" router "TCP" "TCP" "UDP64" "UDP64" "UDP64" "slowTCP" "slowTCP" "server"
  printf "$ROW_FMT" "" "Gbit/s" "retr" "kpps" "sent" "loss%" "Mbit/s" "min 1s" "saw peer"
  awk -F'\t' -v r="$1" -v fmt="$ROW_FMT" '$1 == r { printf fmt, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$RESULTS"
}

# stat_of ID COLUMN DECIMALS -> "median min max" over the runs, or fail.
stat_of() {
  awk -F'\t' -v id="$1" -v c="$2" '$2 == id && $c ~ /^[0-9.]+$/ { print $c }' "$RESULTS" | sort -g |
    awk -v d="$3" '{ v[NR] = $1 } END { if (NR == 0) { print "fail fail fail"; exit }
         m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         f = "%." d "f %." d "f %." d "f\n"; printf f, m, v[1], v[NR] }'
}

# ratio A B : A / B as "0.123x", or n/a.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.3fx", a / b
    else printf "n/a" }'
}

# cell ID COLUMN DECIMALS : "median [min-max]" or fail.
cell() {
  local med lo hi
  read -r med lo hi < <(stat_of "$1" "$2" "$3")
  if [ "$med" = fail ]; then echo fail; else echo "$med [$lo-$hi]"; fi
}

print_summary() {
  local id label ktcp kudp
  echo; echo "== median [min-max] over $RUNS runs; ratios of medians vs the kernel row =="
  printf '%-30.30s %-22s %-20s %-16s %-18s %-18s %9s %9s\n' router "TCP Gbit/s" "UDP64 kpps" \
    "UDP64 loss%" "slow TCP Mbit/s" "slow min 1s" "TCP/kern" "UDP/kern"
  read -r ktcp _ _ < <(stat_of kernel 4 3)
  read -r kudp _ _ < <(stat_of kernel 6 1)
  for id in $SCENARIOS; do
    label=$(awk -F'\t' -v id="$id" '$2 == id { print $3; exit }' "$RESULTS")
    [ -n "$label" ] || continue
    printf '%-30.30s %-22s %-20s %-16s %-18s %-18s %9s %9s\n' "$label" "$(cell "$id" 4 3)" \
      "$(cell "$id" 6 1)" "$(cell "$id" 8 1)" "$(cell "$id" 9 2)" "$(cell "$id" 10 2)" \
      "$(ratio "$(stat_of "$id" 4 3 | cut -d' ' -f1)" "$ktcp")" \
      "$(ratio "$(stat_of "$id" 6 1 | cut -d' ' -f1)" "$kudp")"
  done
  echo "(slow TCP: the -b $SLOW_RATE flow beside the flood, its receiver's rate over its whole run;"
  echo " slow min 1s: its slowest one-second interval during the flood, as its receiver saw it)"
  local last
  last=$(ls "$TMPD"/r*-sb-routers.json 2>/dev/null | sort -V | tail -1)
  if [ -n "$last" ]; then
    echo; echo "switchboard NAT counters after the last run:"
    jq -r '(if type == "array" then . else (.result // .routers // []) end)[]
           | select(.name == "gw") | .counters | to_entries[]
           | select(.key | startswith("nat_")) | "  \(.key) = \(.value)"' "$last" 2>/dev/null ||
      sed 's/^/  /' "$last"
  fi
}

# ---------------------------------------------------------------------- Main
main() {
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  [ "$(id -u)" = 0 ] || { echo "nat.sh: must run as root (network namespaces, taps)" >&2; exit 2; }
  [ -c /dev/net/tun ] || { echo "nat.sh: /dev/net/tun is missing" >&2; exit 2; }
  local b missing=""
  for b in ip ss iperf3 ping jq ethtool setsid timeout; do
    command -v "$b" >/dev/null 2>&1 || missing+=" $b"
  done
  if [ -n "$missing" ]; then
    echo "nat.sh: missing tools:$missing" >&2
    echo "install with: apt-get install -y iproute2 iperf3 iputils-ping jq ethtool util-linux coreutils iptables" >&2
    exit 2
  fi
  if command -v iptables >/dev/null 2>&1; then NATTOOL=iptables
  elif command -v nft >/dev/null 2>&1; then NATTOOL=nft
  fi
  if [[ " $SCENARIOS " == *" kernel "* ]] && [ -z "$NATTOOL" ]; then
    log "neither iptables nor nft is installed (apt-get install iptables): no kernel row"
    SCENARIOS=${SCENARIOS//kernel/}
  fi
  if [[ " $SCENARIOS " == *" sb "* ]] && [ ! -x "$SB" ]; then
    log "building $SB"
    (cd "$ROOT" && cargo build --release --bin switchboard) >&2 ||
      { echo "nat.sh: cannot build switchboard" >&2; exit 2; }
  fi

  TMPD=$(mktemp -d -t nb-bench.XXXXXX) || exit 2
  STATE_PIDS="$TMPD/state.pids"; STATE_NS="$TMPD/state.netns"; RESULTS="$TMPD/results.tsv"
  FIFO="$TMPD/stdin.fifo"; mkfifo "$FIFO"
  : >"$STATE_PIDS"; : >"$STATE_NS"; : >"$RESULTS"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local t0=$SECONDS run id rc
  log "prefix $P; rows: $SCENARIOS; $RUNS runs; TCP ${TCP_SECS}s, UDP ${UDP_SECS}s x ${UDP_LEN}B," \
    "slow flow $SLOW_RATE"
  log "$(nproc) CPUs; iperf3 $(iperf3 --version | awk 'NR==1{print $2}'); kernel $(uname -r);" \
    "kernel NAT by ${NATTOOL:-none}; $SB"
  for (( run = 1; run <= RUNS; run++ )); do
    for id in $SCENARIOS; do
      SCN="r$run-$id-"; LABEL=$id
      declare -F "setup_$id" >/dev/null || { warn "unknown row '$id' (skipped)"; continue; }
      # set -e inside the subshell: a failed setup step fails the row. The
      # label is passed back through a file because the subshell sets it.
      ( set -e; "setup_$id"; echo "$LABEL" >"$TMPD/label" ); rc=$?
      if [ "$rc" = 0 ]; then
        LABEL=$(cat "$TMPD/label")
        [ "$id" = sb ] && SB_CTL="$TMPD/${SCN}control"
        measure "$run" "$id"
      else
        warn "$id: setup failed (rc=$rc); logs:"
        for b in "$TMPD/$SCN"*.log; do [ -s "$b" ] && tail -5 "$b" | sed 's/^/    /' >&2; done
        printf '%s\t%s\t%s\tfail\t-\tfail\tfail\tfail\tfail\tfail\t-\n' "$run" "$id" \
          "$id (setup failed)" >>"$RESULTS"
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
