"""Subscribers and load for bench/realtime.sh: half SSE, half WebSocket, all on one asyncio loop."""
import argparse, asyncio, json, os, re, sqlite3, subprocess, time

import aiohttp

parser = argparse.ArgumentParser()
for name in ("url", "token", "results", "db"):
    parser.add_argument("--" + name, required=True)
for name in ("pid", "subscribers", "duration"):
    parser.add_argument("--" + name, type=int, required=True)
parser.add_argument("--rate", type=float, required=True)
args = parser.parse_args()

SEQ = re.compile(r'"seq":(\d+)')
arrivals = []  # (seq, arrival time); the API shows `at` to the second only, so it is read from the database after the run
received = 0
seqs_ok = True
connected = 0
errors = []
measuring = False


def rss_kb():
    with open(f"/proc/{args.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def record(seq, now):
    global received
    received += 1
    if measuring:
        arrivals.append((seq, now))


async def sse(session, ready):
    global connected, seqs_ok
    headers = {"Authorization": "Bearer " + args.token}
    async with session.get(args.url + "/api/v1/events/stream?types=execution.*", headers=headers) as response:
        assert response.status == 200, response.status
        connected += 1
        ready.set()
        last = 0
        async for line in response.content:
            if line.startswith(b"data: "):
                text = line[6:].decode()
                seq = int(SEQ.search(text).group(1))
                record(seq, time.time())
                if seq <= last:
                    seqs_ok = False
                last = seq


async def ws(session, ready):
    global connected, seqs_ok
    async with session.ws_connect(args.url.replace("http", "ws") + "/api/v1/ws", headers={"Authorization": "Bearer " + args.token},
                                  max_msg_size=0) as socket:
        await socket.send_str(json.dumps({"op": "subscribe", "types": ["execution.*"]}))
        last = 0
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            if '"op":"' in message.data and '"seq":' not in message.data:
                if '"op":"subscribed"' in message.data:
                    connected += 1
                    ready.set()
                continue
            seq = int(SEQ.search(message.data).group(1))
            record(seq, time.time())
            if seq <= last:
                seqs_ok = False
            last = seq


async def guarded(coroutine):
    try:
        await coroutine
    except asyncio.CancelledError:
        pass
    except Exception as error:  # noqa: BLE001 - reported in the result
        errors.append(repr(error))


async def main():
    global measuring
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.sleep(1)
        before = rss_kb()
        tasks = []
        for index in range(args.subscribers):
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(guarded((sse if index % 2 == 0 else ws)(session, ready))))
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        deadline = time.time() + 60
        while connected < args.subscribers and time.time() < deadline and len(errors) == 0:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        with_streams = rss_kb()

        headers = {"Authorization": "Bearer " + args.token, "Content-Type": "application/json"}
        body = json.dumps({"skillId": "echo", "input": {"n": 1}})
        measuring = True
        started = time.time()
        sent = 0
        while time.time() - started < args.duration:
            async with session.post(args.url + "/api/v1/executions", data=body, headers=headers) as response:
                await response.read()
                if response.status == 202:
                    sent += 1
            pause = started + sent / args.rate - time.time()
            if pause > 0:
                await asyncio.sleep(pause)
        await asyncio.sleep(3)
        peak = rss_kb()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # `at` is the server's clock when the event was written (stored to the millisecond), before its commit.
    with sqlite3.connect(args.db, timeout=30) as db:
        written = dict(db.execute("SELECT seq, at FROM events").fetchall())
    def epoch(value):
        if isinstance(value, (int, float)):
            return float(value)
        from datetime import datetime, timezone
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    latencies = sorted((now - epoch(written[seq])) * 1000 for seq, now in arrivals if seq in written)
    pct = lambda p: round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 1) if latencies else None
    expected = sent * 4 * connected
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    per_connection = round((with_streams - before) / max(1, connected), 1)
    result = {
        "commit": commit, "cores": os.cpu_count(), "subscribers": args.subscribers, "connected": connected,
        "executionsPerSecond": args.rate, "executions": sent, "durationSeconds": args.duration,
        "deliveries": len(latencies), "expectedDeliveries": expected, "inSeqOrder": seqs_ok,
        "fanOutLatencyMs": {"p50": pct(0.5), "p99": pct(0.99), "max": round(latencies[-1], 1) if latencies else None},
        "rssKB": {"before": before, "withStreams": with_streams, "peak": peak}, "rssPerConnectionKB": per_connection,
        "errors": errors[:5], "targets": {"p99Under250ms": (pct(0.99) or 1e9) < 250},
    }
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, time.strftime("realtime-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    json.dump(result, open(path, "w"), indent=2)
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| subscribers held (SSE + WebSocket) | {connected} of {args.subscribers} | 1000 |")
    print(f"| events delivered | {len(latencies)} of {expected} expected, in seq order: {seqs_ok} | all |")
    print(f"| fan-out latency | p50 {pct(0.5)} ms, p99 {pct(0.99)} ms, max {result['fanOutLatencyMs']['max']} ms | p99 < 250 ms |")
    print(f"| server memory per connection | {per_connection} KiB (RSS {before // 1024} -> {with_streams // 1024} MiB) | recorded |")
    print(f"\nWritten to {path}")


asyncio.run(main())
