#!/usr/bin/env bash
# vxlan.sh - VXLAN throughput: switchboard's VXLAN port against the kernel's
# vxlan device, namespace to namespace over the same veth underlay.
#
# Host A (namespace a) always has a kernel vxlan device (VNI 42, port 4789,
# overlay 10.79.0.1/24) on a veth link (10.79.255.1 <-> .2, MTU 1550, so the
# overlay carries 1500-byte frames) to host B. Rows:
#
#   id        what terminates the tunnel on B
#   sb        `switchboard run` in B: a segment with a VXLAN port (remote A)
#             and a tap (offloads on, the default), moved into namespace c
#             (10.79.0.2/24)
#   kernel    a kernel vxlan device in B itself (10.79.0.2/24); offloads on
#   kernel1500  the same with TSO/GSO/GRO off on both vxlan devices and both
#             veths: plain 1500-byte frames, as switchboard moves them
#
# A's veth has tx checksumming off in every row: across a veth the kernel
# leaves the inner TCP checksum for the peer to trust, and a userspace VTEP
# cannot see that it is missing (a real NIC fills it in).
#
# Per row and run: iperf3 TCP, one stream, VB_SECS seconds, in each
# direction (receiver's rate). Runs are interleaved.
#
# Safety: every namespace is named "vb-<tag>-*" and is removed on exit
# (trap); processes are stopped by the PIDs recorded when started; every
# wait is bounded.
#
# Usage (root; needs iproute2, iperf3, jq, ethtool). From the project root:
#   bash benches/vxlan.sh
#   VB_RUNS=1 VB_SECS=3 bash benches/vxlan.sh
# Environment: VB_RUNS (3) VB_SECS (5) VB_ROWS ("sb kernel kernel1500")
#   SWITCHBOARD (target/release/switchboard; built with cargo if missing)

set -uo pipefail

RUNS=${VB_RUNS:-3}
SECS=${VB_SECS:-5}
ROWS=${VB_ROWS:-"sb kernel kernel1500"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SB=${SWITCHBOARD:-$ROOT/target/release/switchboard}
TAG=$(printf '%04x' $(( ($$ ^ RANDOM) & 0xffff )))
P="vb-$TAG"
TMPD=$(mktemp -d)
PIDS=""

for t in ip iperf3 jq ethtool; do
    command -v "$t" >/dev/null || { echo "vxlan.sh: needs $t" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "vxlan.sh: needs root" >&2; exit 1; }
if [ ! -x "$SB" ]; then
    (cd "$ROOT" && cargo build --release --bin switchboard) || exit 1
fi

teardown() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null; done
    sleep 0.2
    for pid in $PIDS; do kill -9 "$pid" 2>/dev/null; done
    PIDS=""
    for n in a b c; do ip netns del "$P-$n" 2>/dev/null; done
}
trap 'teardown; rm -rf "$TMPD"' EXIT

nx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# Builds the underlay and A's vxlan device; $1 = the row.
setup() {
    local row=$1
    for n in a b c; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
    ip -n "$P-a" link add va mtu 1550 type veth peer name vb mtu 1550 netns "$P-b"
    ip -n "$P-a" addr add 10.79.255.1/24 dev va; ip -n "$P-a" link set va up
    ip -n "$P-b" addr add 10.79.255.2/24 dev vb; ip -n "$P-b" link set vb up
    nx a ethtool -K va tx off >/dev/null 2>&1
    ip -n "$P-a" link add vx0 type vxlan id 42 dstport 4789 remote 10.79.255.2 \
        local 10.79.255.1 dev va
    ip -n "$P-a" addr add 10.79.0.1/24 dev vx0; ip -n "$P-a" link set vx0 up
    case $row in
    sb)
        cat >"$TMPD/sb.toml" <<EOF
control = "$TMPD/control"
[segments.overlay]
taps = ["$P-t"]
vxlan = [{ vni = 42, local = "10.79.255.2:4789", remotes = ["10.79.255.1"] }]
EOF
        nx b "$SB" run "$TMPD/sb.toml" >"$TMPD/sb.log" 2>&1 &
        PIDS="$PIDS $!"
        for _ in $(seq 50); do ip -n "$P-b" link show "$P-t" >/dev/null 2>&1 && break; sleep 0.1; done
        ip -n "$P-b" link set "$P-t" netns "$P-c"
        ip -n "$P-c" addr add 10.79.0.2/24 dev "$P-t"; ip -n "$P-c" link set "$P-t" up
        PEER=c ;;
    kernel|kernel1500)
        ip -n "$P-b" link add vx0 type vxlan id 42 dstport 4789 remote 10.79.255.1 \
            local 10.79.255.2 dev vb
        ip -n "$P-b" addr add 10.79.0.2/24 dev vx0; ip -n "$P-b" link set vx0 up
        if [ "$row" = kernel1500 ]; then
            for h in a b; do
                for d in vx0 v$h; do
                    nx $h ethtool -K $d tso off gso off gro off >/dev/null 2>&1
                done
            done
        fi
        PEER=b ;;
    esac
    # ARP across the tunnel, bounded.
    nx a ping -c 2 -W 2 -w 6 10.79.0.2 >/dev/null 2>&1
}

# iperf3 TCP from namespace $1 to $2 (address $3); prints Gbit/s.
tcp() {
    local from=$1 to=$2 addr=$3
    nx "$to" timeout $((SECS + 20)) iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
    local spid=$!
    sleep 0.5
    nx "$from" timeout $((SECS + 15)) iperf3 -c "$addr" -p 5201 -t "$SECS" -J 2>/dev/null \
        | jq -r '(.end.sum_received.bits_per_second // 0) / 1e9 | . * 100 | round / 100'
    wait "$spid" 2>/dev/null
}

printf '%-12s %-4s %14s %14s\n' row run "A->B Gbit/s" "B->A Gbit/s"
for run in $(seq "$RUNS"); do
    for row in $ROWS; do
        setup "$row"
        ab=$(tcp a "$PEER" 10.79.0.2)
        ba=$(tcp "$PEER" a 10.79.0.1)
        printf '%-12s %-4s %14s %14s\n' "$row" "$run" "${ab:-fail}" "${ba:-fail}"
        teardown
    done
done
