#!/usr/bin/env python3
"""Commit to SSE: how long after a write is acknowledged its event reaches a live stream.

Usage: bench/commit_to_sse.py WRITE_URL READ_URL TOKEN COUNT [PAUSE_MS]

Opens `GET /api/v1/events/stream?types=skill.created` on READ_URL, then creates COUNT skills on WRITE_URL one after
another (PAUSE_MS apart, default 10). For each, the latency is from the moment its 201 arrived (the write had
committed) to the moment its `skill.created` frame arrived on the stream. Prints JSON: count, p50, p90, p99 and max
in milliseconds, and how many events never arrived (within 10 s of the last write). Standard library only.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse
import uuid


def main():
    write_url, read_url, token, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    pause = (int(sys.argv[5]) if len(sys.argv) > 5 else 10) / 1000
    arrived, lock = {}, threading.Lock()
    read = urllib.parse.urlsplit(read_url)
    stream = http.client.HTTPConnection(read.hostname, read.port, timeout=60)
    stream.request("GET", "/api/v1/events/stream?types=skill.created",
                   headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
    response = stream.getresponse()
    assert response.status == 200, f"stream: {response.status}"

    def listen():
        data = None
        while True:
            line = response.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                now = time.monotonic()
                resource = json.loads(data).get("resourceId")
                with lock:
                    arrived.setdefault(resource, now)
                data = None

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.5)

    write = urllib.parse.urlsplit(write_url)
    connection = http.client.HTTPConnection(write.hostname, write.port, timeout=30)
    acknowledged = {}
    prefix = uuid.uuid4().hex[:8]
    for i in range(count):
        body = json.dumps({"slug": f"probe-{prefix}-{i}", "name": f"Probe {i}", "description": "Commit to SSE probe.",
                           "category": "ops", "tags": [], "runner": {"type": "builtin", "name": "echo"},
                           "inputSchema": {"type": "object"}})
        connection.request("POST", "/api/v1/skills", body=body,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        reply = connection.getresponse()
        raw = reply.read()
        at = time.monotonic()
        if reply.status == 201:
            acknowledged[json.loads(raw)["id"]] = at
        time.sleep(pause)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if all(k in arrived for k in acknowledged):
                break
        time.sleep(0.05)
    with lock:
        latencies = sorted((arrived[k] - t) * 1000 for k, t in acknowledged.items() if k in arrived)
        missing = sum(1 for k in acknowledged if k not in arrived)

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 1) if latencies else None

    print(json.dumps({"count": len(acknowledged), "p50Ms": pct(0.50), "p90Ms": pct(0.90), "p99Ms": pct(0.99),
                      "maxMs": round(latencies[-1], 1) if latencies else None, "missing": missing}))


if __name__ == "__main__":
    main()
