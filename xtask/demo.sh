#!/usr/bin/env bash
# The sluice demo: a namespace lab on this machine, the daemon on config/demo.toml, real TCP
# connections from a client through the XDP balancer (DSR) to three backends weighted 1:2:3,
# and a table of who answered. Everything it creates is removed at the end, also on failure.
#
# Usage: xtask/demo.sh PATH-TO-SLUICE [CONNECTIONS]   (run by `cargo xtask demo`, as root)
set -euo pipefail

SLUICE=${1:?usage: demo.sh PATH-TO-SLUICE [CONNECTIONS]}
CONNS=${2:-600}
P=sl-demo            # every namespace this demo creates starts with this prefix
VIP=10.97.0.100
LB=10.97.0.1
CLIENT=10.97.0.2
BACKENDS=(10.97.0.11 10.97.0.12 10.97.0.13)
WEIGHTS=(1 2 3)
HERE=$(cd "$(dirname "$0")/.." && pwd)
LOG=$(mktemp -d)
DAEMON=

cleanup() {
  set +e
  if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null; fi
  "$SLUICE" --netns $P-sw peer detach --interface p-lb >/dev/null 2>&1
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "$ns"
  done
  rm -rf "$LOG"
}
trap cleanup EXIT
cleanup   # leftovers of a crashed earlier run
LOG=$(mktemp -d)

say() { printf '\n== %s\n' "$*"; }
inside() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

say "building the lab: client, load balancer and 3 backends on one bridge (namespaces $P-*)"
ip netns add $P-sw
inside sw ip link add br0 type bridge
inside sw ip link set br0 up
node() {  # node NAME ADDRESS
  ip netns add "$P-$1"
  inside sw ip link add eth0 netns "$P-$1" type veth peer name "p-$1"
  inside sw ip link set "p-$1" master br0 up
  inside "$1" ip link set lo up
  inside "$1" ip addr add "$2/24" dev eth0
  inside "$1" ip link set eth0 up
}
node cl $CLIENT
node lb $LB
for i in 0 1 2; do node "b$((i + 1))" "${BACKENDS[$i]}"; done

# The client reaches the VIP through the LB. Its partial TCP checksums would not survive
# XDP_TX on a veth, so it computes them in software.
inside cl ip route add $VIP/32 via $LB
inside cl ethtool -K eth0 tx off >/dev/null
inside lb sysctl -qw net.ipv4.ip_forward=1
# veth only delivers XDP_TX frames to a peer that runs an XDP program.
"$SLUICE" --netns $P-sw peer attach --interface p-lb >/dev/null

say "starting a TCP server on each backend (VIP $VIP on loopback, no ARP for it: DSR)"
for i in 1 2 3; do
  inside "b$i" ip addr add $VIP/32 dev lo
  inside "b$i" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  # In a subshell, so the server is not a job of this shell (no "Terminated" noise later).
  ( exec ip netns exec "$P-b$i" python3 -c '
import socket, sys
name = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(512)
while True:
    c, _ = s.accept()
    c.recv(64); c.sendall(name.encode()); c.close()
' "backend-$i" & )
done

say "starting sluice on the LB's eth0 with config/demo.toml (weights ${WEIGHTS[*]})"
"$SLUICE" --netns $P-lb run --config "$HERE/config/demo.toml" >"$LOG/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 50); do grep -q "balancer attached" "$LOG/daemon.log" && break; sleep 0.1; done
grep -q "balancer attached" "$LOG/daemon.log" || { cat "$LOG/daemon.log"; exit 1; }
sed 's/^/   daemon: /' "$LOG/daemon.log"

burst() {
inside cl python3 - "$CONNS" "${WEIGHTS[@]}" <<'PY'
import socket, sys, time
n = int(sys.argv[1]); weights = [int(w) for w in sys.argv[2:]]
counts, failed, t0 = {}, 0, time.time()
for i in range(n):
    try:
        s = socket.create_connection(("10.97.0.100", 80), timeout=2)
        s.sendall(b"hi"); name = s.recv(64).decode(); s.close()
        counts[name] = counts.get(name, 0) + 1
    except OSError:
        failed += 1
dt = time.time() - t0
total = sum(weights)
print(f"\n   {'backend':<12}{'weight':>7}{'answered':>10}{'share':>9}{'expected':>10}")
for i, w in enumerate(weights, 1):
    c = counts.get(f"backend-{i}", 0)
    print(f"   {'backend-'+str(i):<12}{w:>7}{c:>10}{c / n:>9.1%}{w / total:>10.1%}")
print(f"\n   {n - failed} of {n} connections answered in {dt:.1f} s, {failed} failed")
sys.exit(1 if failed else 0)
PY
}

say "$CONNS TCP connections from the client to $VIP:80"
burst

say "failover: stopping backend-2's server; health checks (tcp, every 500 ms, fall 2) take it out"
t0=$(date +%s%N)
ip netns pids $P-b2 | xargs -r kill
for _ in $(seq 100); do grep -q "backend down" "$LOG/daemon.log" && break; sleep 0.05; done
grep -q "backend down" "$LOG/daemon.log" || { echo "backend-2 was not detected down"; cat "$LOG/daemon.log"; exit 1; }
echo "   detected down after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
"$SLUICE" backend list --state-dir /run/sluice/demo | sed 's/^/   /'
# With backend-2 down its share goes to the others: 1:3 of the traffic.
WEIGHTS=(1 0 3)
say "$CONNS more connections: none may fail, none may reach backend-2"
burst

say "done; tearing the lab down"
