#!/usr/bin/env python3
"""Guest-side helpers of `cargo xtask vm-test` (run by tests/vm/guest.sh inside the guests).

    helper.py snapshot STATE_DIR AFTER OUT [PID]
                                           wait for a status.json the daemon (PID) wrote after
                                           Unix time AFTER, copy it to OUT
    helper.py reconcile BEFORE AFTER SENT BACKEND_RX VIP FLOWS
                                           pktgen's count against sluice's counters (two
                                           snapshots) and the backend's; key=value lines
    helper.py bench BENCH_JSON             `sluice bench throughput` ran with pktgen, every
                                           frame sent was processed, figures positive;
                                           key=value lines (bench=ok|FAILED)
    helper.py progs PID                    the BPF programs process PID holds, as the kernel
                                           reports them: "name:verified-insns" each
    helper.py verifier LOG                 a program the kernel refused in LOG (aya's load
                                           error), as "NAME: the verifier's message"
    helper.py serve ADDR PORT              TCP server: read a request line, answer
                                           "ok <bytes>\\n" and close (forever)
    helper.py connect ADDR PORT N SIZE     N TCP connections, each sends SIZE bytes and a
                                           newline and expects "ok <SIZE>"; prints how many
                                           completed, exits 1 unless all did
"""

import ctypes
import json
import math
import os
import re
import socket
import struct
import sys
import time


def alive(pid):
    """Whether process `pid` runs (exists and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def snapshot(state_dir, after, out, pid=None):
    """Wait for a status.json the daemon (process `pid`, if given) wrote after Unix time
    `after`; copy it to `out`. Fails at once if the daemon has exited."""
    path = os.path.join(state_dir, "status.json")
    deadline = time.time() + 120
    while True:
        if pid is not None and not alive(pid):
            sys.exit(f"the daemon (pid {pid}) exited")
        try:
            with open(path, encoding="utf-8") as f:
                st = json.load(f)
            if st["written"] > after:
                break
        except (OSError, ValueError, KeyError):
            pass
        if time.time() > deadline:
            sys.exit(f"no status in {path} written after {after}")
        time.sleep(0.2)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(st, f)


def reconcile(before, after, sent, backend_rx, vip_name, flows):
    """Every frame pktgen sent is counted by exactly one of sluice's reasons; the forwarded
    ones all went to the VIP's backend, in `flows` new flows, and the backend's kernel
    decapsulated every one of them. Prints key=value lines; exits 1 on any mismatch."""
    with open(before, encoding="utf-8") as f:
        b = json.load(f)
    with open(after, encoding="utf-8") as f:
        a = json.load(f)
    delta = {k: a["reasons"][k] - b["reasons"].get(k, 0) for k in a["reasons"]}
    fwd = sum(v for k, v in delta.items() if k.startswith("fwd_"))
    drop = sum(v for k, v in delta.items() if k.startswith("drop_"))
    passed = sum(v for k, v in delta.items() if not k.startswith(("fwd_", "drop_")))

    def vip(st):
        return next(v for v in st["vips"] if v["name"] == vip_name)

    vip_packets = vip(a)["packets"] - vip(b)["packets"]
    vip_flows = vip(a)["new_flows"] - vip(b)["new_flows"]
    be_packets = sum(x["packets"] for x in vip(a)["backends"]) - sum(
        x["packets"] for x in vip(b)["backends"]
    )
    moved = ", ".join(f"{k} {v}" for k, v in sorted(delta.items()) if v)
    checks = [
        (fwd + drop + passed == sent, f"sluice counted {fwd + drop + passed}, pktgen sent {sent}"),
        (fwd == sent, f"forwarded {fwd} of {sent}"),
        (vip_packets == sent and be_packets == sent, f"VIP counted {vip_packets}, its backends {be_packets}"),
        (vip_flows == flows, f"new flows {vip_flows}, expected {flows}"),
        (backend_rx == fwd, f"backend's tunl0 decapsulated {backend_rx} of {fwd} forwarded"),
    ]
    failed = [msg for ok, msg in checks if not ok]
    print(f"pktgen_sent={sent}")
    print(f"pktgen_forwarded={fwd}")
    print(f"pktgen_dropped={drop}")
    print(f"pktgen_passed={passed}")
    print(f"pktgen_backend_rx={backend_rx}")
    print(f"pktgen_new_flows={vip_flows}")
    print(f"pktgen_reasons={moved or 'none'}")
    if failed:
        print(f"pktgen_error={'; '.join(failed)}")
    sys.exit(1 if failed else 0)


def bench(path):
    """The pktgen benchmark's report: pktgen ran (not live frames), every run sent frames
    and its program processed exactly those (pktgen counts only frames the veth took), and
    every rate and ratio is positive and finite. Speed is never judged."""
    with open(path, encoding="utf-8") as f:
        t = json.load(f)["throughput"]
    gen = t["generator"]
    checks = [(gen["kind"] == "pktgen", f"generator {gen['kind']} ran ({gen['why']})")]
    for r in t["runs"]:
        name = f"{r['config']} ({r.get('mode', 'dsr')}) at {r['flows']} flows"
        checks.append((r["generated"] > 0, f"{name}: pktgen sent nothing"))
        checks.append(
            (r["processed"] == r["generated"], f"{name}: sent {r['generated']}, processed {r['processed']}")
        )
        checks.append((math.isfinite(r["pps"]) and r["pps"] > 0, f"{name}: rate {r['pps']}"))
    for s in t["summary"]:
        for key in ("vs_floor_tx", "vs_drop"):
            checks.append((math.isfinite(s[key]) and s[key] > 0, f"{s['flows']} flows: {key} {s[key]}"))
    failed = [msg for ok, msg in checks if not ok]
    sent = sum(r["generated"] for r in t["runs"])
    processed = sum(r["processed"] for r in t["runs"])
    refused = sum(r["refused"] for r in t["runs"])
    ratios = ", ".join(
        f"{s.get('mode', 'dsr')} {s['flows']} flows {s['vs_floor_tx']:.2f}x floor_tx ({s['sluice_pps'] / 1e3:.1f} kpps)"
        for s in t["summary"]
    )
    print(f"bench={'FAILED' if failed else 'ok'}")
    print(f"bench_generator={gen['kind']}")
    print(f"bench_why={gen['why']}")
    print(f"bench_ratios={ratios}")
    print(f"bench_frames={len(t['runs'])} runs: {sent} sent = {processed} processed ({refused} refused by the veth)")
    if failed:
        print(f"bench_error={'; '.join(failed[:5])}")


SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
PROG_INFO_SIZE = 232  # struct bpf_prog_info (6.1 and later)


def progs(pid):
    """Names and verified instruction counts of the programs `pid` holds (its fdinfo
    lists their ids; the bpf() syscall describes each)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ids = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fdinfo):
        try:
            with open(os.path.join(fdinfo, fd), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            pass
    out = []
    for prog_id in sorted(ids):
        attr = ctypes.create_string_buffer(struct.pack("=III", prog_id, 0, 0), 128)
        fd = libc.syscall(SYS_BPF, BPF_PROG_GET_FD_BY_ID, attr, 128)
        if fd < 0:
            out.append(f"id{prog_id}:?")
            continue
        info = ctypes.create_string_buffer(PROG_INFO_SIZE)
        attr = ctypes.create_string_buffer(
            struct.pack("=IIQ", fd, PROG_INFO_SIZE, ctypes.addressof(info)), 128
        )
        rc = libc.syscall(SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, attr, 128)
        os.close(fd)
        if rc < 0:
            out.append(f"id{prog_id}:?")
            continue
        name = info.raw[64:80].split(b"\0", 1)[0].decode()
        (verified,) = struct.unpack_from("=I", info.raw, 216)
        out.append(f"{name}:{verified}")
    print(" ".join(out))


def verifier(log):
    """The first program refused in `log` and the verifier's own message: the lines between
    the last instruction of its log and its "verification time"/"processed" trailer."""
    with open(log, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"program (\S+): the BPF_PROG_LOAD syscall returned ([^.]*)", line)
        if not m:
            continue
        message = []
        for rest in lines[i + 1 :]:
            text = rest.strip()
            if text.startswith(("verification time", "processed ")):
                break
            if re.match(r"\d+: \(", text) or text.startswith(";") or not text:
                message = []
            else:
                message.append(text)
        print(f"{m.group(1)}: {' / '.join(message) or m.group(2)}")
        return


def serve(addr, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"ok %d\n" % (len(data) - 1))
            except OSError:
                pass


def connect(addr, port, n, size):
    ok = 0
    errors = []
    for i in range(n):
        try:
            with socket.create_connection((addr, port), timeout=10) as s:
                s.sendall(b"x" * size + b"\n")
                answer = b""
                while not answer.endswith(b"\n"):
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    answer += chunk
            if answer == b"ok %d\n" % size:
                ok += 1
            else:
                errors.append(f"connection {i}: answer {answer!r}")
        except OSError as e:
            errors.append(f"connection {i}: {e}")
    print(f"{ok} of {n} TCP connections completed ({size} bytes each, answered)")
    for e in errors[:5]:
        print(e)
    sys.exit(0 if ok == n else 1)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "snapshot":
        snapshot(args[0], int(args[1]), args[2], int(args[3]) if len(args) > 3 else None)
    elif cmd == "reconcile":
        reconcile(args[0], args[1], int(args[2]), int(args[3]), args[4], int(args[5]))
    elif cmd == "verifier":
        verifier(args[0])
    elif cmd == "bench":
        bench(args[0])
    elif cmd == "progs":
        progs(int(args[0]))
    elif cmd == "serve":
        serve(args[0], int(args[1]))
    elif cmd == "connect":
        connect(args[0], int(args[1]), int(args[2]), int(args[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
