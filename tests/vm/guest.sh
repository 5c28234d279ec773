#!/bin/bash
# The checks `cargo xtask vm-test` runs in each guest kernel, in a chroot into the host's root
# (shared read-only over 9p; see tests/vm/init), as root. $1: the run's vm.env (written by
# xtask: paths of the host-built binaries, the guest kernel's module tree, the output
# directory). Each check records `key=value` lines in $VM_OUT/result.txt, which xtask reads;
# full logs go to $VM_OUT/*.log. A failing check does not stop the later ones.
#
#   (a) fixtures  the packet fixture table (every program loaded by this kernel's verifier)
#   (b) smoke     DSR and IPIP forwarding of real TCP and UDP through namespaces
#   (c) pktgen    the kernel's packet generator sends a bounded count of UDP frames to a VIP
#                 of the `sluice` daemon (native XDP on a veth); every frame must be counted
#                 exactly once by sluice and reach the backend
#   (d) interop   the backend decapsulates with the kernel's own ipip device (tunl0), not
#                 sluice's decap; real TCP connections to the VIP through sluice complete
set -uo pipefail
# shellcheck source=/dev/null
. "$1"

HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
OUT=$VM_OUT
RESULT=$OUT/result.txt
: >"$RESULT"
RUN=/run/sluice-vm
mkdir -p "$RUN"

result() { printf '%s=%s\n' "$1" "$2" >>"$RESULT"; }
step() { printf '\n=== vm %s: %s\n' "$VM_LABEL" "$*"; }
# The last lines of a log, for the console when a check fails.
tail_log() {
    echo "--- last 40 lines of $1:"
    tail -n 40 "$1"
    echo "---"
}

result kernel "$(uname -r)"
result accel "$VM_ACCEL"

step "modules"
if modprobe -d "$VM_KROOT" -a veth bridge ipip pktgen 2>"$OUT/modprobe.log"; then
    result modules ok
else
    result modules FAILED
    cat "$OUT/modprobe.log"
fi
sysctl -qw net.core.bpf_jit_enable=1 2>/dev/null
result bpf_jit "$(cat /proc/sys/net/core/bpf_jit_enable 2>/dev/null || echo '?')"

# ---- (a) the packet fixture table --------------------------------------------------------
step "(a) packet fixtures: $VM_FIXTURES"
cd "$VM_WORKSPACE/tests" || exit 1
if timeout 900 "$VM_FIXTURES" --test-threads=1 --nocapture >"$OUT/fixtures.log" 2>&1; then
    result fixtures ok
else
    result fixtures FAILED
    tail_log "$OUT/fixtures.log"
fi
result fixtures_detail "$(grep -o 'fixtures: [0-9]* of [0-9]* vectors passed.*' "$OUT/fixtures.log" | tail -n 1)"
result fixtures_tests "$(grep -o 'test result: .*' "$OUT/fixtures.log" | tail -n 1)"
grep -E 'fixtures: |test result' "$OUT/fixtures.log"

# ---- (b) DSR and IPIP through namespaces ---------------------------------------------------
step "(b) end-to-end smoke (DSR, IPIP): $VM_SMOKE"
if timeout 600 "$VM_SMOKE" --test-threads=1 --nocapture >"$OUT/smoke.log" 2>&1; then
    result smoke ok
else
    result smoke FAILED
    tail_log "$OUT/smoke.log"
fi
result smoke_tests "$(grep -o 'test result: .*' "$OUT/smoke.log" | tail -n 1)"
grep 'test result' "$OUT/smoke.log"

# ---- (c) and (d): the daemon between a generator/client and a kernel-ipip backend ----------
#
#   vm-cl  cl0 10.96.0.2 ── lb0 10.96.0.1  vm-lb  lb1 10.96.1.1 ── be0 10.96.1.2  vm-be
#          pktgen, TCP client   sluice (native XDP)   MTU 1600       tunl0: VIP 10.96.0.100
#
# Static neighbours and no IPv6, so that nothing but the test's own frames reach lb0 while
# pktgen runs (every frame lb0 receives moves one of sluice's counters).
cd "$RUN" || exit 1
VIP=10.96.0.100
LB0_MAC=02:96:00:00:00:01
CL0_MAC=02:96:00:00:00:02
LB1_MAC=02:96:00:00:01:01
BE0_MAC=02:96:00:00:01:02
COUNT=${VM_PKTGEN_COUNT:-10000}
FLOWS=64
in() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

topology() {
    local ns
    for ns in vm-cl vm-lb vm-be; do
        ip netns add "$ns" || return 1
        in "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || return 1
        ip -n "$ns" link set lo up || return 1
    done
    ip -n vm-lb link add lb0 address $LB0_MAC type veth peer name cl0 address $CL0_MAC netns vm-cl &&
        ip -n vm-lb link add lb1 address $LB1_MAC mtu 1600 type veth peer name be0 address $BE0_MAC mtu 1600 netns vm-be &&
        ip -n vm-cl addr add 10.96.0.2/24 dev cl0 && ip -n vm-cl link set cl0 up &&
        ip -n vm-cl route add $VIP/32 via 10.96.0.1 &&
        ip -n vm-cl neigh replace 10.96.0.1 lladdr $LB0_MAC dev cl0 nud permanent &&
        in vm-cl ethtool -K cl0 tx off >/dev/null &&
        ip -n vm-lb addr add 10.96.0.1/24 dev lb0 && ip -n vm-lb link set lb0 up &&
        ip -n vm-lb addr add 10.96.1.1/24 dev lb1 && ip -n vm-lb link set lb1 up &&
        ip -n vm-lb neigh replace 10.96.0.2 lladdr $CL0_MAC dev lb0 nud permanent &&
        ip -n vm-lb neigh replace 10.96.1.2 lladdr $BE0_MAC dev lb1 nud permanent &&
        in vm-lb sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 &&
        ip -n vm-be addr add 10.96.1.2/24 dev be0 && ip -n vm-be link set be0 up &&
        ip -n vm-be route add 10.96.0.0/24 via 10.96.1.1 &&
        ip -n vm-be neigh replace 10.96.1.1 lladdr $LB1_MAC dev be0 nud permanent &&
        ip -n vm-be link set tunl0 up && ip -n vm-be addr add $VIP/32 dev tunl0 &&
        in vm-be sysctl -qw net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.be0.rp_filter=0 &&
        # veth hands frames redirected into lb1 only to a peer that runs XDP.
        "$VM_SLUICE" --netns vm-be peer attach --interface be0 >/dev/null
}

cat >"$RUN/sluice.toml" <<EOF
[daemon]
interface = "lb0"
xdp_mode = "native"
flow_table_size = 65536
table_capacity = 8192
state_dir = "$RUN"

[[vip]]
name = "pktgen-udp"
address = "$VIP"
port = 9
protocol = "udp"
forwarding = "ipip"
table_size = 1021
[vip.health]
check = "none"
[[vip.backend]]
address = "10.96.1.2"

[[vip]]
name = "interop-tcp"
address = "$VIP"
port = 80
protocol = "tcp"
forwarding = "ipip"
table_size = 1021
[vip.health]
check = "none"
[[vip.backend]]
address = "10.96.1.2"
EOF

step "(c) pktgen through the sluice daemon, (d) ipip interop: topology and daemon"
daemon=
if topology 2>"$OUT/topology.log"; then
    "$VM_SLUICE" --netns vm-lb run --config "$RUN/sluice.toml" >"$OUT/daemon.log" 2>&1 &
    daemon=$!
    if ! python3 "$HERE/helper.py" snapshot "$RUN" 0 "$RUN/started.json" 2>>"$OUT/daemon.log"; then
        echo "the daemon did not start"
        tail_log "$OUT/daemon.log"
        kill "$daemon" 2>/dev/null
        daemon=
    fi
else
    echo "building the topology failed:"
    cat "$OUT/topology.log"
fi

if [[ -n $daemon ]]; then
    # The programs the daemon holds, as the kernel lists them.
    ids=$(grep -h '^prog_id:' /proc/"$daemon"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -un)
    names=
    if command -v bpftool >/dev/null; then
        for id in $ids; do
            names+=" $(bpftool prog show id "$id" 2>/dev/null | awk 'NR == 1 { for (i = 1; i < NF; i++) if ($i == "name") print $(i + 1) }')"
        done
    fi
    result programs_loaded "$(echo "$ids" | grep -c .)"
    result programs_names "$(echo $names)"
    result xdp_attach "$(ip -n vm-lb -d link show lb0 | grep -o 'prog/xdp[a-z]* id [0-9]*\|xdp[a-z]*/id:[0-9]*' | head -n 1)"
    echo "daemon (pid $daemon) holds $(echo "$ids" | grep -c .) programs:$names"
fi

# ---- (c) pktgen ----------------------------------------------------------------------------
step "(c) pktgen: $COUNT UDP frames, $FLOWS flows, cl0 -> $VIP:9"
pg() { echo "$1" | in vm-cl tee "/proc/net/pktgen/$2" >/dev/null; }
if [[ -n $daemon ]] && python3 "$HERE/helper.py" snapshot "$RUN" "$(date +%s)" "$RUN/before.json" &&
    rx0=$(in vm-be cat /sys/class/net/tunl0/statistics/rx_packets); then
    pg "rem_device_all" kpktgend_0 &&
        pg "add_device cl0" kpktgend_0 &&
        for setting in "count $COUNT" "clone_skb 0" "burst 1" "pkt_size 60" "delay 0" \
            "dst $VIP" "dst_mac $LB0_MAC" "src_min 10.96.0.2" "src_max 10.96.0.2" \
            "udp_dst_min 9" "udp_dst_max 9" "udp_src_min 10000" "udp_src_max $((10000 + FLOWS - 1))"; do
            pg "$setting" cl0 || break
        done &&
        pg start pgctrl
    in vm-cl cat /proc/net/pktgen/cl0 >"$OUT/pktgen.txt"
    sent=$(grep -o 'pkts-sofar: [0-9]*' "$OUT/pktgen.txt" | awk '{print $2}')
    errors=$(grep -o 'errors: [0-9]*' "$OUT/pktgen.txt" | awk '{print $2}')
    grep -A1 '^Result' "$OUT/pktgen.txt"
    echo "pktgen: pkts-sofar ${sent:-?}, errors ${errors:-?} (frames veth refused before XDP)"
    python3 "$HERE/helper.py" snapshot "$RUN" "$(($(date +%s) + 1))" "$RUN/after.json"
    rx1=$(in vm-be cat /sys/class/net/tunl0/statistics/rx_packets)
    result pktgen_errors "${errors:-?}"
    if python3 "$HERE/helper.py" reconcile "$RUN/before.json" "$RUN/after.json" "${sent:-0}" \
        $((rx1 - rx0)) pktgen-udp $FLOWS >"$RUN/reconcile.txt" && [[ ${sent:-0} == "$COUNT" ]]; then
        result pktgen ok
    else
        result pktgen FAILED
        [[ ${sent:-0} == "$COUNT" ]] || result pktgen_error "pktgen sent ${sent:-?} of $COUNT"
    fi
    cat "$RUN/reconcile.txt" >>"$RESULT"
    cat "$RUN/reconcile.txt"
else
    result pktgen FAILED
    result pktgen_error "no daemon or no baseline"
fi

# ---- (d) kernel ipip interop ---------------------------------------------------------------
step "(d) interop: TCP to $VIP:80 through sluice (ipip), decapsulated by the backend's tunl0"
if [[ -n $daemon ]]; then
    in vm-be python3 "$HERE/helper.py" serve 0.0.0.0 80 >"$OUT/server.log" 2>&1 &
    server=$!
    # Wait (bounded) for the listener.
    for _ in $(seq 50); do
        in vm-be grep -q ':0050 00000000:0000 0A' /proc/net/tcp && break
        sleep 0.1
    done
    if in vm-cl python3 "$HERE/helper.py" connect $VIP 80 20 3000 >"$OUT/interop.log" 2>&1; then
        result interop ok
    else
        result interop FAILED
    fi
    cat "$OUT/interop.log"
    result interop_detail "$(head -n 1 "$OUT/interop.log")"
    kill "$server" 2>/dev/null
    result interop_tunl0_rx "$(in vm-be cat /sys/class/net/tunl0/statistics/rx_packets)"
else
    result interop FAILED
    result interop_detail "no daemon"
fi

if [[ -n $daemon ]]; then
    kill -TERM "$daemon"
    if wait "$daemon"; then
        result daemon_exit ok
    else
        result daemon_exit "FAILED (status $?)"
        tail_log "$OUT/daemon.log"
    fi
fi
result done 1
