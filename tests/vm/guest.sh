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
#   (e) bench     `sluice bench throughput --generator pktgen --quick`: the benchmark's pktgen
#                 source runs (sluice and the floors fed by pktgen, every frame sent counted
#                 by the program it reached); its figures are printed, never judged for speed
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
START=$(date +%s.%N)
elapsed() { awk "BEGIN { printf \"%5.1fs\", $(date +%s.%N) - $START }"; }
# A header with the time since the script started.
step() { printf '\n=== vm %s [%s]: %s\n' "$VM_LABEL" "$(elapsed)" "$*"; }
note() { printf '[%s] %s\n' "$(elapsed)" "$*"; }
# The last lines of a log, for the console when a check fails; and the program the kernel
# refused, if that is why (recorded once, as `refused`).
tail_log() {
    echo "--- last 40 lines of $1:"
    tail -n 40 "$1"
    echo "---"
    local refused
    refused=$(python3 "$HERE/helper.py" verifier "$1")
    if [[ -n $refused ]]; then
        echo "the kernel refused $refused"
        grep -q '^refused=' "$RESULT" || result refused "$refused"
    fi
}

result kernel "$(uname -r)"
result accel "$VM_ACCEL"
# What the guest itself sees: a KVM guest gets the kvm-clock clocksource, an emulated one
# (TCG) never does.
if grep -qw kvm-clock /sys/devices/system/clocksource/clocksource0/available_clocksource 2>/dev/null; then
    result accel_guest kvm
else
    result accel_guest tcg
fi

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
nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

topology() {
    local ns
    for ns in vm-cl vm-lb vm-be; do
        ip netns add "$ns" || return 1
        nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
            net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 || return 1
        ip -n "$ns" link set lo up || return 1
    done
    ip -n vm-lb link add lb0 address $LB0_MAC type veth peer name cl0 address $CL0_MAC netns vm-cl &&
        ip -n vm-lb link add lb1 address $LB1_MAC mtu 1600 type veth peer name be0 address $BE0_MAC mtu 1600 netns vm-be &&
        ip -n vm-cl addr add 10.96.0.2/24 dev cl0 && ip -n vm-cl link set cl0 up &&
        ip -n vm-cl route add $VIP/32 via 10.96.0.1 &&
        ip -n vm-cl neigh replace 10.96.0.1 lladdr $LB0_MAC dev cl0 nud permanent &&
        nsx vm-cl ethtool -K cl0 tx off >/dev/null &&
        ip -n vm-lb addr add 10.96.0.1/24 dev lb0 && ip -n vm-lb link set lb0 up &&
        ip -n vm-lb addr add 10.96.1.1/24 dev lb1 && ip -n vm-lb link set lb1 up &&
        ip -n vm-lb neigh replace 10.96.0.2 lladdr $CL0_MAC dev lb0 nud permanent &&
        ip -n vm-lb neigh replace 10.96.1.2 lladdr $BE0_MAC dev lb1 nud permanent &&
        nsx vm-lb sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 &&
        ip -n vm-be addr add 10.96.1.2/24 dev be0 && ip -n vm-be link set be0 up &&
        ip -n vm-be route add 10.96.0.0/24 via 10.96.1.1 &&
        ip -n vm-be neigh replace 10.96.1.1 lladdr $LB1_MAC dev be0 nud permanent &&
        ip -n vm-be link set tunl0 up && ip -n vm-be addr add $VIP/32 dev tunl0 &&
        nsx vm-be sysctl -qw net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.be0.rp_filter=0 &&
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
    note "topology up; starting the daemon"
    "$VM_SLUICE" --netns vm-lb run --config "$RUN/sluice.toml" >"$OUT/daemon.log" 2>&1 &
    daemon=$!
    if ! python3 "$HERE/helper.py" snapshot "$RUN" 0 "$RUN/started.json" "$daemon" 2>>"$OUT/daemon.log"; then
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
    # The programs the daemon loaded, as the kernel describes them (name:verified insns).
    progs=$(python3 "$HERE/helper.py" progs "$daemon")
    result programs_loaded "$(wc -w <<<"$progs")"
    result programs "$progs"
    result xdp_attach "$(ip -n vm-lb -d link show lb0 | grep -o 'prog/xdp[a-z]* id [0-9]*' | head -n 1)"
    note "the daemon is serving"
    echo "the daemon (pid $daemon) holds $(wc -w <<<"$progs") programs (name:verified instructions): $progs"
    echo "lb0: $(ip -n vm-lb -d link show lb0 | grep -o 'prog/xdp[a-z]* id [0-9]*')"
fi

# ---- (c) pktgen ----------------------------------------------------------------------------
step "(c) pktgen: $COUNT UDP frames, $FLOWS flows, cl0 -> $VIP:9"
pg() { echo "$1" | nsx vm-cl tee "/proc/net/pktgen/$2" >/dev/null; }
if [[ -n $daemon ]] && python3 "$HERE/helper.py" snapshot "$RUN" "$(date +%s)" "$RUN/before.json" "$daemon" &&
    rx0=$(nsx vm-be cat /sys/class/net/tunl0/statistics/rx_packets); then
    pg "rem_device_all" kpktgend_0 &&
        pg "add_device cl0" kpktgend_0 &&
        # udp_src_max is exclusive: FLOWS source ports, FLOWS flows.
        for setting in "count $COUNT" "clone_skb 0" "pkt_size 60" "delay 0" \
            "dst $VIP" "dst_mac $LB0_MAC" "src_min 10.96.0.2" "src_max 10.96.0.2" \
            "udp_dst_min 9" "udp_dst_max 9" "udp_src_min 10000" "udp_src_max $((10000 + FLOWS))"; do
            pg "$setting" cl0 || break
        done &&
        pg start pgctrl
    nsx vm-cl cat /proc/net/pktgen/cl0 >"$OUT/pktgen.txt"
    # "pkts-sofar: 10000  errors: 0" (frames the driver refused count as errors, not sent).
    sent=$(sed -n 's/.*pkts-sofar: *\([0-9]*\) *errors: *\([0-9]*\).*/\1/p' "$OUT/pktgen.txt")
    errors=$(sed -n 's/.*pkts-sofar: *\([0-9]*\) *errors: *\([0-9]*\).*/\2/p' "$OUT/pktgen.txt")
    grep -A1 '^Result' "$OUT/pktgen.txt"
    echo "pktgen: pkts-sofar ${sent:-?}, errors ${errors:-?} (frames veth refused before XDP)"
    python3 "$HERE/helper.py" snapshot "$RUN" "$(($(date +%s) + 1))" "$RUN/after.json" "$daemon"
    rx1=$(nsx vm-be cat /sys/class/net/tunl0/statistics/rx_packets)
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
    nsx vm-be python3 "$HERE/helper.py" serve 0.0.0.0 80 >"$OUT/server.log" 2>&1 &
    server=$!
    # Wait (bounded) for the listener.
    for _ in $(seq 50); do
        nsx vm-be grep -q ':0050 00000000:0000 0A' /proc/net/tcp && break
        sleep 0.1
    done
    # 3000 bytes a connection: full-size segments (1500 bytes, 1520 encapsulated; lb1 and
    # be0 have MTU 1600). The VIP is only reachable through sluice: the LB has no route to it.
    rx0=$(nsx vm-be cat /sys/class/net/tunl0/statistics/rx_packets)
    if nsx vm-cl python3 "$HERE/helper.py" connect $VIP 80 20 3000 >"$OUT/interop.log" 2>&1; then
        result interop ok
    else
        result interop FAILED
    fi
    rx1=$(nsx vm-be cat /sys/class/net/tunl0/statistics/rx_packets)
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
    echo "$(head -n 1 "$OUT/interop.log"); tunl0 decapsulated $((rx1 - rx0)) packets"
    tail -n +2 "$OUT/interop.log"
    result interop_detail "$(head -n 1 "$OUT/interop.log")"
    result interop_tunl0_rx "$((rx1 - rx0))"
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
# ---- (e) the throughput benchmark with its pktgen source ------------------------------------
step "(e) sluice bench throughput --generator pktgen --quick (figures for the log, not judged)"
timeout 300 "$VM_SLUICE" bench throughput --generator pktgen --quick --out "$OUT/bench" \
    >"$OUT/bench.log" 2>&1
rc=$?
if ((rc == 0)); then
    cat "$OUT/bench/bench.txt"
    python3 "$HERE/helper.py" bench "$OUT/bench/bench.json" >"$RUN/bench.txt"
    cat "$RUN/bench.txt" >>"$RESULT"
    cat "$RUN/bench.txt"
else
    result bench FAILED
    result bench_error "sluice bench exited with status $rc (log: $OUT/bench.log)"
    tail_log "$OUT/bench.log"
fi

result done 1
