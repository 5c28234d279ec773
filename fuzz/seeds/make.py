#!/usr/bin/env python3
"""Writes the seed corpora of the parser fuzz targets (fuzz/seeds/<target>/) from the
repository's real inputs: the config files (valid and invalid), API requests as the CLI
sends them, the model servers' metric pages of the tests, agent-check lines, HTTP answers
and cron entries. Run from anywhere: `python3 fuzz/seeds/make.py`."""

import json
import pathlib
import struct

root = pathlib.Path(__file__).resolve().parents[2]
seeds = root / "fuzz" / "seeds"


def write(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# 1. Config files.
for f in sorted((root / "config").glob("*.toml")) + sorted((root / "config" / "invalid").glob("*.toml")):
    write("config_toml", f"{f.parent.name}-{f.stem}", f.read_bytes())

# 2. API requests (first byte: the read's segment size).
demo = (root / "config" / "demo.toml").read_text()
requests = [
    {"op": "status", "flows": False},
    {"op": "status", "flows": True},
    {"op": "config"},
    {"op": "lookup", "vip": "web", "src": "198.51.100.7:40000", "dport": None},
    {"op": "lookup", "vip": "v6", "src": "[2001:db8::7]:40000", "dport": 8443},
    {"op": "autoscale-status"},
    {"op": "apply", "config": demo, "dry_run": True, "base_version": None},
    {"op": "apply", "config": demo, "dry_run": False, "base_version": 3, "force": False},
    {"op": "reload"},
    {"op": "announce-status"},
    {"op": "announce-withdraw", "all": True},
    {"op": "announce-restore"},
    {"op": "load-explain", "vip": "llm"},
    {"op": "load-explain"},
]
for i, r in enumerate(requests):
    write("api_request", f"req-{i:02}-{r['op']}", bytes([i * 7 % 256]) + json.dumps(r).encode() + b"\n")
write("api_request", "bad-json", b"\x00{\"op\":\"status\",\n")
write("api_request", "no-newline", b"\x00{\"op\":\"config\"}")

# 3. Prometheus pages (first byte: the preset, or 4 = a selector on the first line).
vllm = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 5.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3
vllm:num_requests_waiting{engine="1",model_name="m"} 4
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.125
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
vllm:prompt_tokens_total{engine="0",model_name="m"} 1.2345e+06
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 42.0
"""
tgi = """# TYPE tgi_queue_size gauge
tgi_queue_size 12
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 32
tgi_batch_current_max_tokens 9000
"""
sglang = """# HELP sglang:num_queue_reqs The number of requests in the waiting queue
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 17.0
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.58
"""
triton = """# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 6
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 9
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 11147
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.75
"""
edges = ('\r\n  # a comment\r\n\r\nm{a="x\\\\y\\"z\\nw"} 1 1712345678000\r\nm{a="other"}\t2\r\n'
         'inf +Inf\nninf -Inf\nnan NaN\nempty{} 3\ntrailing{a="1",} 4\nneg -1.5e-3\n')
for i, (name, page) in enumerate([("vllm", vllm), ("tgi", tgi), ("sglang", sglang), ("triton", triton)]):
    write("prom_report", name, bytes([i]) + page.encode())
write("prom_report", "edges", b"\x00" + edges.encode())
write("prom_report", "selector-triton", b"\x04" + b'nv_trt_llm_request_metrics{request_type="waiting"}\n' + triton.encode())
write("prom_report", "selector-escapes", b"\x04" + b'm{a="x\\\\y\\"z\\nw"}\n' + edges.encode())
write("prom_report", "bad-line", b"\x00ok 1\nm{a=\"1\" 2\n")

# 4. Agent-check lines (first byte: the read's segment size).
agent = ["75%\n", "weight:75%", "weight:3\r\n", "up", "ready, 50%", "drain", "MAINT", "down",
         "down#disk full", "up 80% # warming up", "fail", "stopped", "drain,down", "maint drain",
         "maxconn:10 hello", "abc%", "", "#only a reason", "weight:x", "weight:x%\n"]
for i, line in enumerate(agent):
    write("agent_line", f"line-{i:02}", bytes([i * 3]) + line.encode())

# 5. HTTP answers (first byte: the body limit: none, the load reader's, 16 bytes).
page = vllm.encode()
answers = [
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(page) + page,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nvllm:\r\n1a\r\nnum_requests_waiting 3.0\n\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + tgi.encode(),
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n42\n",
    b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
]
for i, a in enumerate(answers):
    for limit in range(3):
        write("http_answer", f"answer-{i}-{limit}", bytes([limit]) + a)

# 6. Cron entries: schedule, newline, time zone, then 8 bytes of time (ms, little end).
t = 1_780_000_000_000  # 2026
cron = [("0 8 * * MON-FRI", "Europe/Paris"), ("0 20 * * *", "UTC"), ("@daily", "UTC"),
        ("@hourly", "America/New_York"), ("*/15 9-17 * * 1-5", "Asia/Kolkata"),
        ("0 13 * * *", "Australia/Lord_Howe"), ("30 2 * * SUN", "Europe/London"),
        ("0 0 29 2 *", "UTC"), ("0 0 L * *", "UTC"), ("0 0 * * 5#2", "UTC"),
        ("0 0 15W * *", "UTC"), ("0 25 * * *", "Europe/Pariss"), ("@weekly", "Pacific/Chatham")]
for i, (s, z) in enumerate(cron):
    write("cron_schedule", f"cron-{i:02}", f"{s}\n{z}".encode() + struct.pack("<Q", t + i * 3_600_000))
