#!/usr/bin/env bash
# vxlan.sh - tunnel throughput: switchboard's VXLAN port and its UDP tunnel
# (plain and sealed) against the kernel's vxlan device, namespace to
# namespace over the same veth underlay.
#
# Host A (namespace a) and host B (namespace b) share a veth link
# (10.79.255.1 <-> .2, MTU 1550, so the overlay carries 1500-byte frames).
# In the VXLAN and kernel rows A has a kernel vxlan device (VNI 42, port 4789,
# overlay 10.79.0.1/24) on it. Rows:
#
#   id        what terminates the tunnel on B
#   sb        `switchboard run` in B: a segment with a VXLAN port (remote A)
#             and a tap (offloads on, the default), moved into namespace c
#             (10.79.0.2/24)
#   kernel    a kernel vxlan device in B itself (10.79.0.2/24); offloads on
#   kernel1500  the same with TSO/GSO/GRO off on both vxlan devices and both
#             veths: plain 1500-byte frames, as switchboard moves them
#   udp       no kernel device: a switchboard in A and in B, each with a
#             segment holding a UDP tunnel (port 5000) to the other and a tap
#             moved into a namespace of its own (d: 10.79.0.1/24 behind A,
#             c: 10.79.0.2/24 behind B). A UDP tunnel has no kernel peer, so
#             both ends are switchboard
#   udpkey    the same, every datagram sealed (ChaCha20-Poly1305) with a
#             fresh 32-byte key file shared by both ends
#
# A's veth has tx checksumming off in every row: across a veth the kernel
# leaves the inner TCP checksum for the peer to trust, and a userspace VTEP
# cannot see that it is missing (a real NIC fills it in).
#
# Per row and run: iperf3 TCP, one stream, VB_SECS seconds, in each
# direction (receiver's rate). Runs are interleaved, so every row's runs
# share the machine's state with the kernel rows'; a summary (median
# [min-max] and the median's ratio to the `kernel` and `kernel1500` rows)
# follows the per-run lines.
#
# Safety: every namespace is named "vb-<tag>-*" and is removed on exit
# (trap); processes are stopped by the PIDs recorded when started; every
# wait is bounded.
#
# Usage (root; needs iproute2, iperf3, jq, ethtool). From the project root:
#   bash benches/vxlan.sh
#   VB_RUNS=1 VB_SECS=3 bash benches/vxlan.sh
# Environment: VB_RUNS (3) VB_SECS (5)
#   VB_ROWS ("sb udp udpkey kernel kernel1500")
#   SWITCHBOARD (target/release/switchboard; built with cargo if missing)

set -uo pipefail

RUNS=${VB_RUNS:-3}
SECS=${VB_SECS:-5}
ROWS=${VB_ROWS:-"sb udp udpkey kernel kernel1500"}
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
    for pid in $PIDS; do wait "$pid" 2>/dev/null; done
    PIDS=""
    for n in a b c d; do ip netns del "$P-$n" 2>/dev/null; done
}
trap 'teardown; rm -rf "$TMPD"' EXIT

nx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

# sb_host HOST VM ADDR SEGMENT-LINE : `switchboard run` in namespace HOST
# with a segment holding tap $P-t and SEGMENT-LINE; once the tap exists it
# is moved into namespace VM and given ADDR. The config and log are named
# after HOST.
sb_host() {
    local host=$1 vm=$2 addr=$3 line=$4
    cat >"$TMPD/sb-$host.toml" <<EOF
control = "$TMPD/control-$host"
[segments.overlay]
taps = ["$P-t"]
$line
EOF
    # Not through nx: a function in the background is a subshell, and its PID
    # is not switchboard's (ip netns exec execs it, keeping this PID).
    ip netns exec "$P-$host" "$SB" run "$TMPD/sb-$host.toml" >"$TMPD/sb-$host.log" 2>&1 &
    PIDS="$PIDS $!"
    for _ in $(seq 50); do ip -n "$P-$host" link show "$P-t" >/dev/null 2>&1 && break; sleep 0.1; done
    ip -n "$P-$host" link set "$P-t" netns "$P-$vm"
    ip -n "$P-$vm" addr add "$addr" dev "$P-t"; ip -n "$P-$vm" link set "$P-t" up
}

# Builds the underlay and the row's tunnel ends; $1 = the row. Sets SELF
# and PEER, the namespaces holding 10.79.0.1 and 10.79.0.2.
setup() {
    local row=$1
    for n in a b c d; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
    ip -n "$P-a" link add va mtu 1550 type veth peer name vb mtu 1550 netns "$P-b"
    ip -n "$P-a" addr add 10.79.255.1/24 dev va; ip -n "$P-a" link set va up
    ip -n "$P-b" addr add 10.79.255.2/24 dev vb; ip -n "$P-b" link set vb up
    nx a ethtool -K va tx off >/dev/null 2>&1
    SELF=a
    case $row in
    udp|udpkey) ;;
    *)
        ip -n "$P-a" link add vx0 type vxlan id 42 dstport 4789 remote 10.79.255.2 \
            local 10.79.255.1 dev va
        ip -n "$P-a" addr add 10.79.0.1/24 dev vx0; ip -n "$P-a" link set vx0 up ;;
    esac
    case $row in
    sb)
        sb_host b c 10.79.0.2/24 \
            'vxlan = [{ vni = 42, local = "10.79.255.2:4789", remotes = ["10.79.255.1"] }]'
        PEER=c ;;
    udp|udpkey)
        local key=""
        if [ "$row" = udpkey ]; then
            od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TMPD/link.key"
            key=", key_file = \"$TMPD/link.key\""
        fi
        sb_host a d 10.79.0.1/24 \
            "udp = [{ local = \"10.79.255.1:5000\", remote = \"10.79.255.2:5000\"$key }]"
        sb_host b c 10.79.0.2/24 \
            "udp = [{ local = \"10.79.255.2:5000\", remote = \"10.79.255.1:5000\"$key }]"
        SELF=d PEER=c ;;
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
    nx "$SELF" ping -c 2 -W 2 -w 6 10.79.0.2 >/dev/null 2>&1
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
        ab=$(tcp "$SELF" "$PEER" 10.79.0.2)
        ba=$(tcp "$PEER" "$SELF" 10.79.0.1)
        printf '%-12s %-4s %14s %14s\n' "$row" "$run" "${ab:-fail}" "${ba:-fail}"
        printf '%s\t%s\t%s\n' "$row" "${ab:-fail}" "${ba:-fail}" >>"$TMPD/results.tsv"
        teardown
    done
done

# Summary: per row and direction, the median [min-max] over the runs (failed
# runs left out), and the median as a fraction of the kernel rows' medians.
echo
printf '%-12s %-22s %-22s %-19s %-19s\n' row "A->B Gbit/s" "B->A Gbit/s" \
    "vs kernel (AB/BA)" "vs kernel1500"
for row in $ROWS; do
    for col in 2 3; do
        awk -F'\t' -v r="$row" -v c="$col" \
            '$1 == r && $c != "fail" { print $c }' "$TMPD/results.tsv" | sort -g |
            awk '{ v[NR] = $1 }
                 END {
                     if (NR == 0) { print "- -"; exit }
                     m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                     printf "%.2f %.2f [%.2f-%.2f]\n", m, m, v[1], v[NR]
                 }'
    done | paste -sd' ' >"$TMPD/sum-$row"
done
for row in $ROWS; do
    read -r mab ab1 ab2 mba ba1 ba2 <"$TMPD/sum-$row"
    ratio() {
        local base=$1 m1=$2 m2=$3 k1 k2
        [ -f "$TMPD/sum-$base" ] || { echo "-"; return; }
        read -r k1 _ _ k2 _ _ <"$TMPD/sum-$base"
        awk -v a="$m1" -v b="$m2" -v x="$k1" -v y="$k2" 'BEGIN {
            f = (x + 0 > 0 && a != "-") ? sprintf("%.2f", a / x) : "-"
            g = (y + 0 > 0 && b != "-") ? sprintf("%.2f", b / y) : "-"
            print f "/" g }'
    }
    printf '%-12s %-22s %-22s %-19s %-19s\n' "$row" "$ab1 $ab2" "$ba1 $ba2" \
        "$(ratio kernel "$mab" "$mba")" "$(ratio kernel1500 "$mab" "$mba")"
done
