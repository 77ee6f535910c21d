#!/usr/bin/env bash
# uplink.sh - the host uplink's throughput beside slirp4netns and pasta.
#
# A "host" namespace (loopback only, plus what a tool needs) runs an iperf3
# server on its 127.0.0.1. A client namespace, whose only way out is the
# tool under test, reaches that server as 10.0.2.2: every tool maps the
# gateway address onto the host's loopback, so the server must see its peer
# as 127.0.0.1. The client is 10.0.2.100/24 with its default route via
# 10.0.2.2. The tool is, one row each:
#
#   id          what carries the client's traffic to the host's sockets
#   sb1500      `switchboard run` in the host namespace with a network
#               (mode "nat", 10.0.2.2/24, MTU 1500, uplink = { host = true,
#               loopback = true }) whose segment is a tap switchboard opens
#               (tap_offload left at its default); the tap is moved into the
#               client namespace
#   sbnofl1500  as sb1500 with tap_offload = false (the network joins a
#               [segments.lab] written out for it): MTU-sized frames on the
#               tap, as slirp4netns's and pasta's taps carry, where sb1500's
#               default takes TSO super-frames
#   sb9216      as sb1500 with MTU 9216 on the network and the tap (the
#               usual jumbo limit, which every kind of port carries)
#   sb65520     as sb1500 with MTU 65520 (the largest a tap takes, as
#               slirp4netns and pasta use)
#   sbns1500    sb1500's network served as a VDE2 directory instead of a
#               tap; the client runs under `switchboard ns vde://DIR --ip
#               10.0.2.100/24 --gw 10.0.2.2 -- iperf3 ...` started in the host
#               namespace: the unprivileged path, with its cable process
#               between the namespace's tap and the switch
#   slirp1500   slirp4netns --configure --mtu=1500, as ../shared/bench/peers.sh
#               sets it up (its "slirp" row)
#   slirp65520  the same with --mtu=65520
#   pasta1500   pasta (package passt), MTU 1500, as peers.sh sets it up
#   pasta65520  the same with MTU 65520
#
# Per row and run: iperf3 TCP, one stream for UB_SECS seconds, client ->
# host (the receiver's rate, the sender's retransmits), then the same with
# -R (host -> client). Beside each, the CPU the tool used while the client
# ran, in percent of one core (sampled from /proc; for sbns1500 the
# daemon's plus the cable process's), and for client -> host the average
# size of the frames the client's stack handed its tap (MTU-sized, or TSO
# super-frames). Runs are interleaved (every row once, then again), and the
# summary gives the median [min-max] over the runs and the ratio of each
# switchboard row's medians to slirp1500's and pasta1500's (and, for
# sb9216 and sb65520, to the 65520 rows').
#
# Safety: every namespace and interface is named "ub-<tag>-*" and lives only
# inside namespaces this script creates and removes on exit (trap). Traffic
# stays inside those namespaces: 10.0.2.0/24 between client and tool, and the
# host namespace's own 127.0.0.1 (the "host" is a private namespace, so
# nothing reaches this machine's loopback or network). Processes are stopped
# by the PIDs recorded when they were started. Every wait and every
# measurement is bounded in time.
#
# Usage (root; needs /dev/net/tun, iproute2, iperf3, jq; slirp4netns and
# passt for their rows; ethtool to show the tap's TSO state). From the project root:
#   bash benches/uplink.sh                       # 3 runs of every row
#   UB_RUNS=1 UB_SECS=5 bash benches/uplink.sh   # a quick look
# Environment:
#   UB_RUNS (3)  UB_SECS (10)
#   UB_SCENARIOS ("sb1500 sbnofl1500 sb9216 sb65520 sbns1500 slirp1500 slirp65520 pasta1500 pasta65520")
#   UB_OUT=dir keeps logs, JSON, the TOML files and results.tsv there
#   SWITCHBOARD (target/release/switchboard; built with cargo if missing)

set -uo pipefail

# ---------------------------------------------------------------- Configuration
RUNS=${UB_RUNS:-3}
SECS=${UB_SECS:-10}
SCENARIOS=${UB_SCENARIOS:-"sb1500 sbnofl1500 sb9216 sb65520 sbns1500 slirp1500 slirp65520 pasta1500 pasta65520"}
OUT=${UB_OUT:-}
PORT=5201
GW=10.0.2.2
CLIENT=10.0.2.100
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SB=${SWITCHBOARD:-$ROOT/target/release/switchboard}
NETNS_DIR=/run/netns   # where "ip netns add" binds namespaces (iproute2's default)
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

TAG=$(printf '%04x' $(( ($$ ^ RANDOM) & 0xffff )))
P="ub-$TAG"      # prefix of every namespace and interface (at most 15 chars with suffixes)
C="$P-ctr"       # the client namespace
H="$P-host"      # the host namespace
TMPD=""; STATE_PIDS=""; STATE_NS=""; FIFO=""; SCN=""; RESULTS=""

BENCH_NAME=uplink
# shellcheck source=netns-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/netns-lib.sh"
# The library's log and warn quote their prefix too strongly to expand it.
log()  { printf '[uplink] %s\n' "$*" >&2; }
warn() { printf '[uplink] WARNING: %s\n' "$*" >&2; }

# hand_back LABEL PID [VDE] : every setup_* runs in a subshell with set -e
# and hands back through files in TMPD what the measurement needs: its
# label, the PID of the process whose CPU is sampled, and (sbns1500 only)
# the VDE directory the client plugs into.
hand_back() {
  echo "$1" >"$TMPD/label"
  echo "$2" >"$TMPD/toolpid"
  echo "${3:-}" >"$TMPD/vde"
}

# client_tap : the client namespace's tap (none for sbns1500, whose
# namespace belongs to `switchboard ns`).
client_tap() {
  [ -n "$(cat "$TMPD/vde")" ] && return 0
  ip -n "$C" -o link show 2>/dev/null | awk -F': ' '$2 != "lo" { sub(/@.*/, "", $2); print $2; exit }'
}

# tap_tx TAP : "packets bytes" the client's tap has sent so far.
tap_tx() {
  ip -n "$C" -s -j link show dev "$1" 2>/dev/null |
    jq -r '.[0].stats64.tx | "\(.packets) \(.bytes)"' 2>/dev/null
}

has_link() { ip -n "$1" link show "$2"; }
has_default_route() { [ -n "$(ip -n "$1" -4 route show default 2>/dev/null)" ]; }
vde_ready() { [ -S "$1/ctl" ]; }

# sb_network MTU SOCKETS [SEGMENT] : a switchboard file with one nat network
# whose only way out is the host uplink, the gateway address mapped onto the
# host's 127.0.0.1; SOCKETS is the line placing its segment (taps, vde, or
# segment = "lab" joining the table SEGMENT writes out). No DHCP (the
# client's address is fixed) and no DNS (nothing asks).
sb_network() {
  local conf="$TMPD/${SCN}switchboard.toml"
  cat >"$conf" <<EOF
control = "$TMPD/${SCN}control"
${3:-}

[networks.lab]
mode = "nat"
address = "$GW/24"
mtu = $1
$2
dns = false
uplink = { host = true, loopback = true }
EOF
  echo "$conf"
}

# sb_tap MTU [OFFLOAD] : switchboard opens the tap in the host namespace; it
# is moved into the client namespace (switchboard's open descriptor stays
# valid). OFFLOAD false: the segment is written out with tap_offload = false.
sb_tap() {
  local mtu=$1 tap="$P-sb0" conf
  mk_ns "$C"; mk_ns "$H"
  if [ "${2:-}" = false ]; then
    conf=$(sb_network "$mtu" 'segment = "lab"' "$(printf '[segments.lab]\ntaps = ["%s"]\ntap_offload = false\nmtu = %s' "$tap" "$mtu")")
  else
    conf=$(sb_network "$mtu" "taps = [\"$tap\"]")
  fi
  spawn switchboard "$H" "$SB" run "$conf"
  local pid=$SPAWNED_PID
  wait_for "switchboard's control socket" 10 test -S "$TMPD/${SCN}control"
  wait_for "tap $tap in $H" 10 has_link "$H" "$tap"
  ip -n "$H" link set "$tap" netns "$C"
  ip -n "$C" link set "$tap" mtu "$mtu"
  addr "$C" "$tap" "$CLIENT/24"
  ip -n "$C" route add default via "$GW"
  # Whether the kernel hands switchboard TSO super-frames (tap_offload's
  # default) or MTU-sized ones, as slirp4netns's and pasta's taps get.
  local tso
  tso=$(ip netns exec "$C" ethtool -k "$tap" 2>/dev/null |
    awk '/^tcp-segmentation-offload:/ { print $2 }') || true
  hand_back "switchboard uplink, tap, MTU $mtu${tso:+, TSO $tso}" "$pid"
}
setup_sb1500() { sb_tap 1500; }
setup_sb9216() { sb_tap 9216; }
setup_sb65520() { sb_tap 65520; }
setup_sbnofl1500() { sb_tap 1500 false; }

# The network served as a VDE2 directory; the client namespace is made per
# measurement by `switchboard ns` (see client_cmd), so C stays unused.
setup_sbns1500() {
  local dir="$TMPD/${SCN}vde" conf
  mk_ns "$H"
  conf=$(sb_network 1500 "vde = \"$dir\"")
  spawn switchboard "$H" "$SB" run "$conf"
  local pid=$SPAWNED_PID
  wait_for "switchboard's control socket" 10 test -S "$TMPD/${SCN}control"
  wait_for "VDE directory $dir" 10 vde_ready "$dir"
  hand_back "switchboard ns (VDE cable), MTU 1500" "$pid" "$dir"
}

# usernet TOOL MTU LABEL : peers.sh's usernet, unchanged but for the names:
# TOOL (slirp4netns or pasta) creates the tap $P-tap in C and configures it
# (10.0.2.100/24, default route via 10.0.2.2, MTU), and maps the gateway
# address onto the host namespace's loopback.
usernet() {
  local tool=$1 mtu=$2 label=$3
  mk_ns "$C"; mk_ns "$H"
  case $tool in
    slirp4netns)
      # Host loopback stays enabled (the default): --disable-host-loopback
      # would forbid the 10.0.2.2 -> 127.0.0.1 mapping measured here.
      # --netns-type=path joins the named namespace itself.
      # --disable-dns: no relay of 10.0.2.3 to this machine's resolver.
      spawn slirp "$H" slirp4netns --configure --mtu="$mtu" --disable-dns \
        --netns-type=path "$NETNS_DIR/$C" "$P-tap"
      ;;
    pasta)
      # This pasta (bookworm) predates --map-host-loopback and maps TCP and
      # untracked UDP to the gateway onto the host's loopback by default.
      # -t/-u/-T/-U none: no port forwarding, whose loopback "splice" path
      # would bypass the tap. It refuses to start without a non-loopback
      # host interface (-i): an unused tap, down, no address, no route.
      # --runas 0: as root it would drop to "nobody", which cannot enter a
      # namespace made by "ip netns". -f: the recorded PID is pasta's.
      # ping_group_range: pasta relays pings through ping sockets, which a
      # fresh namespace allows to no group.
      ip netns exec "$H" ip tuntap add dev "$P-tpl" mode tap
      ip -n "$H" addr add "$GW/32" dev lo
      ip netns exec "$H" sysctl -qw net.ipv4.ping_group_range="0 0"
      spawn pasta "$H" pasta -f -q -4 -D none -S none --runas 0 --config-net -m "$mtu" \
        -i "$P-tpl" -a "$CLIENT" -n 24 -g "$GW" -I "$P-tap" \
        -t none -u none -T none -U none --netns "$C"
      ;;
  esac
  local pid=$SPAWNED_PID
  wait_for "$tool to configure $P-tap in $C" 10 has_default_route "$C"
  hand_back "$label" "$pid"
}
setup_slirp1500()  { usernet slirp4netns 1500  "slirp4netns, MTU 1500"; }
setup_slirp65520() { usernet slirp4netns 65520 "slirp4netns, MTU 65520"; }
setup_pasta1500()  { usernet pasta 1500  "pasta, MTU 1500"; }
setup_pasta65520() { usernet pasta 65520 "pasta, MTU 65520"; }

# needs ID : the tool a row needs, so a missing one skips the row.
needs() {
  case $1 in
    sb*) echo "$SB" ;;
    slirp*) echo slirp4netns ;;
    pasta*) echo pasta ;;
  esac
}

# ------------------------------------------------------------- Measurements
# jqnum FILE EXPR [DECIMALS] : EXPR on an iperf3 JSON report, or "fail".
jqnum() {
  local v
  v=$(jq -r "if (.error // null) != null then \"fail\" else ($2) end" "$1" 2>/dev/null) || v=fail
  [ -n "$v" ] && [ "$v" != null ] || v=fail
  if [ -n "${3:-}" ] && [[ $v =~ ^[0-9.eE+-]+$ ]]; then printf "%.${3}f\n" "$v"; else echo "$v"; fi
}

listening() { ip netns exec "$H" sh -c "ss -Hltn 'sport = :$PORT' | grep -q ."; }

# cpu_ticks PID : user + system clock ticks of PID, all its threads.
cpu_ticks() {
  local st
  read -r st 2>/dev/null <"/proc/$1/stat" || return 1
  set -- ${st##*) }       # -> state ppid ... (utime is the 12th, stime the 13th)
  echo $(( ${12} + ${13} ))
}

# child_of PID : the first process whose parent is PID, or nothing.
child_of() {
  local parent=$1 f st
  for f in /proc/[0-9]*/stat; do
    read -r st 2>/dev/null <"$f" || continue
    set -- ${st##*) }     # -> state ppid ...
    if [ "$2" = "$parent" ]; then f=${f#/proc/}; echo "${f%/stat}"; return 0; fi
  done
  return 1
}

# sampler OUT WATCH PID|child : every 0.25 s, while WATCH lives (bounded),
# appends "nanoseconds ticks" of PID (or of WATCH's first child, found
# once it exists) to OUT.
sampler() {
  local out=$1 watch=$2 pid=$3 i t
  for (( i = 0; i < (SECS + 30) * 4; i++ )); do
    kill -0 "$watch" 2>/dev/null || break
    if [ "$pid" = child ]; then
      pid=$(child_of "$watch") || pid=child
    fi
    if [ "$pid" != child ] && t=$(cpu_ticks "$pid"); then
      echo "$(date +%s%N) $t" >>"$out"
    fi
    sleep 0.25
  done
}

# cpu_pct FILE : percent of one core between the first and last sample.
cpu_pct() {
  [ -s "$1" ] || { echo "-"; return; }
  awk -v hz="$HZ" 'NR == 1 { t0 = $1; c0 = $2 } { t1 = $1; c1 = $2 }
    END { if (t1 - t0 < 5e8) print "-"; else printf "%.0f\n", (c1 - c0) / hz / ((t1 - t0) / 1e9) * 100 }' "$1"
}

# client_cmd [-R] : the iperf3 client line, and the namespace it starts in.
client_cmd() {
  local vde
  vde=$(cat "$TMPD/vde")
  if [ -n "$vde" ]; then
    CLIENT_NS=$H
    CLIENT_ARGV=("$SB" ns "vde://$vde" --ip "$CLIENT/24" --gw "$GW" --mtu 1500 --
      iperf3 -c "$GW" -p "$PORT" -t "$SECS" -J "$@")
  else
    CLIENT_NS=$C
    CLIENT_ARGV=(iperf3 -c "$GW" -p "$PORT" -t "$SECS" -J "$@")
  fi
}

# one DIR [-R] : a one-shot server on the host's loopback, the client, and
# CPU samples of the tool (and of sbns1500's cable) while the client runs.
# Sets GBPS, RETR, CPU and PEER.
one() {
  local dir=$1 f srv cli toolpid s1 s2 p1 p2 peer; shift
  f="$TMPD/${SCN}$dir.json"
  toolpid=$(cat "$TMPD/toolpid")
  spawn "$dir-srv" "$H" iperf3 -s -1 -B 127.0.0.1 -p "$PORT" --forceflush
  srv=$SPAWNED_PID
  GBPS=fail; RETR=-; CPU=-; PEER=-
  if wait_for "iperf3 server" 5 listening; then
    client_cmd "$@"
    setsid timeout $(( SECS + 20 )) ip netns exec "$CLIENT_NS" "${CLIENT_ARGV[@]}" \
      <>"$FIFO" >"$f" 2>"$TMPD/${SCN}$dir-client.log" &
    cli=$!
    echo "$cli" >>"$STATE_PIDS"
    : >"$TMPD/${SCN}$dir-cpu1.txt"; : >"$TMPD/${SCN}$dir-cpu2.txt"
    sampler "$TMPD/${SCN}$dir-cpu1.txt" "$cli" "$toolpid" & s1=$!
    s2=""
    if [ "$CLIENT_NS" = "$H" ]; then
      sampler "$TMPD/${SCN}$dir-cpu2.txt" "$cli" child & s2=$!
    fi
    wait "$cli"
    wait "$s1" ${s2:+"$s2"} 2>/dev/null
    GBPS=$(jqnum "$f" '.end.sum_received.bits_per_second / 1e9' 3)
    RETR=$(jqnum "$f" '.end.sum_sent.retransmits // "-"')
    p1=$(cpu_pct "$TMPD/${SCN}$dir-cpu1.txt"); CPU=$p1
    if [ -n "$s2" ]; then
      p2=$(cpu_pct "$TMPD/${SCN}$dir-cpu2.txt")
      if [ "$p1" != - ] && [ "$p2" != - ]; then CPU=$(( p1 + p2 )); else CPU=-; fi
    fi
  fi
  stop_pids "$srv"
  peer=$(sed -n 's/.*Accepted connection from \([0-9.]*\).*/\1/p' "$TMPD/${SCN}$dir-srv.log" | head -1)
  PEER=${peer:--}
  if [ "$GBPS" = fail ]; then
    warn "$LABEL $dir: iperf3 failed: $(jq -r '.error // empty' "$f" 2>/dev/null | head -1)"
    tail -3 "$TMPD/${SCN}$dir-client.log" 2>/dev/null | sed 's/^/    /' >&2
  fi
  [ "$PEER" != - ] && [ "$PEER" != 127.0.0.1 ] && warn "$LABEL: server saw peer $PEER, expected 127.0.0.1"
  return 0
}

# measure RUN ID : a warm-up ping where the client namespace is ours, both
# directions, one row to results.tsv.
measure() {
  local run=$1 id=$2 fg fr fc rg rr rc peer tap p0 b0 p1 b1 frame=-
  tap=$(client_tap)
  if [ -z "$(cat "$TMPD/vde")" ]; then
    run_bounded 8 "$C" ping -n -c 3 -i 0.2 -W 1 -w 4 "$GW" >/dev/null 2>&1 ||
      warn "$LABEL: warm-up ping to $GW got no reply"
  fi
  [ -n "$tap" ] && read -r p0 b0 < <(tap_tx "$tap")
  one up;   fg=$GBPS; fr=$RETR; fc=$CPU; peer=$PEER
  # The frames the client's stack handed the tap while sending: MTU-sized,
  # or TSO super-frames.
  if [ -n "$tap" ] && read -r p1 b1 < <(tap_tx "$tap") && [[ ${p0:-x} =~ ^[0-9]+$ ]] &&
    (( p1 > p0 )); then
    frame=$(( (b1 - b0) / (p1 - p0) ))
  fi
  one down -R; rg=$GBPS; rr=$RETR; rc=$CPU
  [ "$peer" = - ] && peer=$PEER
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$id" "$LABEL" "$fg" "$fr" "$rg" \
    "$rr" "$fc" "$rc" "$peer" "$frame" >>"$RESULTS"
}

# ------------------------------------------------------------------- Output
ROW_FMT='%-42.42s %8s %7s %6s %7s %8s %7s %6s  %s\n'
print_run() {
  echo; echo "== run $1 of $RUNS =="
  printf "$ROW_FMT" tool "C->H" "C->H" "C->H" "C->H" "H->C" "H->C" "H->C" "server"
  printf "$ROW_FMT" "" "Gbit/s" "retr" "CPU%" "frame B" "Gbit/s" "retr" "CPU%" "saw peer"
  awk -F'\t' -v r="$1" -v fmt="$ROW_FMT" '$1 == r { printf fmt, $3, $4, $5, $8, $11, $6, $7, $9, $10 }' "$RESULTS"
  echo "(frame B: average bytes per frame the client's stack handed its tap while sending)"
}

# stat_of ID COLUMN DECIMALS -> "median min max" over the runs, or fail.
stat_of() {
  awk -F'\t' -v id="$1" -v c="$2" '$2 == id && $c ~ /^[0-9.]+$/ { print $c }' "$RESULTS" | sort -g |
    awk -v d="$3" '{ v[NR] = $1 } END { if (NR == 0) { print "fail fail fail"; exit }
         m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         f = "%." d "f %." d "f %." d "f\n"; printf f, m, v[1], v[NR] }'
}
median_of() { stat_of "$1" "$2" "$3" | cut -d' ' -f1; }

# ratio A B : A / B as "1.23x", or n/a.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b
    else printf "n/a" }'
}

# cell ID COLUMN DECIMALS : "median [min-max]" or fail.
cell() {
  local med lo hi
  read -r med lo hi < <(stat_of "$1" "$2" "$3")
  if [ "$med" = fail ]; then echo fail; else echo "$med [$lo-$hi]"; fi
}

# both ID REF : "C->H ratio / H->C ratio" of ID's medians to REF's, or "-"
# when REF did not run.
both() {
  grep -q "^[0-9]*	$2	" "$RESULTS" || { echo "-"; return; }
  echo "$(ratio "$(median_of "$1" 4 3)" "$(median_of "$2" 4 3)") / $(ratio "$(median_of "$1" 6 3)" "$(median_of "$2" 6 3)")"
}

print_summary() {
  local id label fmt='%-42.42s %-22s %-22s %6s %6s\n'
  echo; echo "== median [min-max] over $RUNS runs, ${SECS}s each; C = client namespace, H = host (server on 127.0.0.1) =="
  printf "$fmt" tool "C->H Gbit/s" "H->C Gbit/s" "CPU%" "CPU%"
  printf "$fmt" "" "" "" "C->H" "H->C"
  for id in $SCENARIOS; do
    label=$(awk -F'\t' -v id="$id" '$2 == id { print $3; exit }' "$RESULTS")
    [ -n "$label" ] || continue
    printf "$fmt" "$label" "$(cell "$id" 4 3)" "$(cell "$id" 6 3)" \
      "$(median_of "$id" 8 0 | sed 's/fail/-/')" "$(median_of "$id" 9 0 | sed 's/fail/-/')"
  done
  echo "(CPU%: the tool's process while the client ran, percent of one core; for switchboard ns"
  echo " the daemon's plus the cable process's)"
  echo; echo "== ratios of medians, C->H / H->C =="
  fmt='%-11s %-16s %-16s %-16s %-16s\n'
  printf "$fmt" row "vs slirp1500" "vs pasta1500" "vs slirp65520" "vs pasta65520"
  for id in $SCENARIOS; do
    [[ $id == sb* ]] || continue
    grep -q "^[0-9]*	$id	" "$RESULTS" || continue
    if [ "$id" = sb9216 ] || [ "$id" = sb65520 ]; then
      printf "$fmt" "$id" "$(both "$id" slirp1500)" "$(both "$id" pasta1500)" \
        "$(both "$id" slirp65520)" "$(both "$id" pasta65520)"
    else
      printf "$fmt" "$id" "$(both "$id" slirp1500)" "$(both "$id" pasta1500)" "" ""
    fi
  done
}

# ---------------------------------------------------------------------- Main
main() {
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  [ "$(id -u)" = 0 ] || { echo "uplink.sh: must run as root (network namespaces, taps)" >&2; exit 2; }
  [ -c /dev/net/tun ] || { echo "uplink.sh: /dev/net/tun is missing" >&2; exit 2; }
  local b missing="" id tool keep=""
  for b in ip ss iperf3 ping jq setsid timeout; do
    command -v "$b" >/dev/null 2>&1 || missing+=" $b"
  done
  if [ -n "$missing" ]; then
    echo "uplink.sh: missing tools:$missing" >&2
    echo "install with: apt-get install -y iproute2 iperf3 iputils-ping jq util-linux coreutils" >&2
    exit 2
  fi
  if [[ " $SCENARIOS " == *" sb"* ]] && [ ! -x "$SB" ]; then
    log "building $SB"
    (cd "$ROOT" && cargo build --release --bin switchboard) >&2 ||
      log "cannot build switchboard: its rows are skipped"
  fi
  for id in $SCENARIOS; do
    tool=$(needs "$id")
    if [ -n "$tool" ] && ! command -v "$tool" >/dev/null 2>&1; then
      case $tool in
        slirp4netns) log "$id skipped: slirp4netns is not installed (apt-get install slirp4netns)" ;;
        pasta) log "$id skipped: pasta is not installed (apt-get install passt)" ;;
        *) log "$id skipped: $tool is missing" ;;
      esac
      continue
    fi
    keep+=" $id"
  done
  SCENARIOS=${keep# }
  [ -n "$SCENARIOS" ] || { echo "uplink.sh: no row can run" >&2; exit 2; }

  TMPD=$(mktemp -d -t ub-bench.XXXXXX) || exit 2
  STATE_PIDS="$TMPD/state.pids"; STATE_NS="$TMPD/state.netns"; RESULTS="$TMPD/results.tsv"
  FIFO="$TMPD/stdin.fifo"; mkfifo "$FIFO"
  : >"$STATE_PIDS"; : >"$STATE_NS"; : >"$RESULTS"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  local t0=$SECONDS run rc
  log "prefix $P; rows: $SCENARIOS; $RUNS runs; TCP ${SECS}s each way"
  log "$(nproc) CPUs; iperf3 $(iperf3 --version | awk 'NR==1{print $2}'); kernel $(uname -r); $SB"
  for (( run = 1; run <= RUNS; run++ )); do
    for id in $SCENARIOS; do
      SCN="r$run-$id-"; LABEL=$id
      declare -F "setup_$id" >/dev/null || { warn "unknown row '$id' (skipped)"; continue; }
      # set -e inside the subshell: a failed setup step fails the row.
      ( set -e; "setup_$id" ); rc=$?
      if [ "$rc" = 0 ]; then
        LABEL=$(cat "$TMPD/label")
        measure "$run" "$id"
      else
        warn "$id: setup failed (rc=$rc); logs:"
        for b in "$TMPD/$SCN"*.log; do [ -s "$b" ] && tail -5 "$b" | sed 's/^/    /' >&2; done
        printf '%s\t%s\t%s\tfail\t-\tfail\t-\t-\t-\t-\t-\n' "$run" "$id" "$id (setup failed)" >>"$RESULTS"
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
