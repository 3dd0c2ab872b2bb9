#!/usr/bin/env python3
"""The cluster suite's client: three steward instances on one PostgreSQL, checked as an operator would.

scripts/test-cluster.sh starts PostgreSQL and PgBouncer and sets the CLUSTER_* variables; this script starts and
kills the instances itself, so it can inject faults. Only the standard library is used, only loopback addresses are
contacted, and every wait is bounded. Each property prints PASS or FAIL with what was seen; the exit code is the
number of failures.

Usage: scripts/cluster_check.py [--only NAME[,NAME...]]   (names: queue cron realtime revocation ratelimit
idempotency kill sequencer pgrestart listen pgbouncer)
"""
import base64
import concurrent.futures as futures
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIN = os.environ["CLUSTER_BIN"]
DATABASE_URL = os.environ["CLUSTER_DATABASE_URL"]
BOUNCER_URL = os.environ.get("CLUSTER_BOUNCER_URL")
PSQL = os.environ["CLUSTER_PSQL"]
PG_RESTART = os.environ["CLUSTER_PG_RESTART"]
EXECUTIONS = int(os.environ.get("CLUSTER_EXECUTIONS", "5000"))
LEASE_SECONDS = 5
ADMIN = ("cluster-admin@example.com", "Cluster-Admin-Password-42")
FINAL = {"succeeded", "failed", "cancelled"}

WORK = tempfile.mkdtemp(prefix="steward-cluster.")  # kept when a property fails, for its logs
SHARED_ENV = {
    "PATH": "/usr/bin:/bin",
    "STEWARD_JWT_SECRET": secrets.token_hex(32),
    "STEWARD_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "STEWARD_AUDIT_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    "STEWARD_RATE_LIMIT_STORE": "database",
    "STEWARD_LOG_LEVEL": os.environ.get("CLUSTER_LOG_LEVEL", "warning"),
    "STEWARD_BCRYPT_COST": "10",
    "STEWARD_WORKERS": "4",
    "STEWARD_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    "STEWARD_JOB_HEARTBEAT_SECONDS": "1",
    "STEWARD_MAX_CONCURRENT_EXECUTIONS_PER_USER": "100000",
    "STEWARD_ACCESS_TOKEN_TTL": "3600",
    "STEWARD_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "STEWARD_ADMIN_EMAIL": ADMIN[0],
    "STEWARD_ADMIN_PASSWORD": ADMIN[1],
    # Every limit is off but the one the rate-limit property checks.
    **{f"STEWARD_RATE_LIMIT_{p}": "0" for p in ["LOGIN", "LOGIN_IP", "MAIL", "MAIL_IP", "MFA", "API", "ANONYMOUS", "EXECUTIONS"]},
    "STEWARD_RATE_LIMIT_REGISTER": "10/hour",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    def __init__(self, name, database_url=DATABASE_URL, extra=None):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(SHARED_ENV, DATABASE_URL=database_url, STEWARD_PORT=str(self.port),
                        STEWARD_DATA_DIR=os.path.join(WORK, name), **(extra or {}))
        os.makedirs(self.env["STEWARD_DATA_DIR"], exist_ok=True)
        self.log = os.path.join(WORK, f"{name}.log")
        self.process = None

    def start(self):
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([BIN, "serve"], env=self.env, stdout=log, stderr=log)
        wait_until(30, f"{self.name} ready", lambda: request(self, "GET", "/health/ready", timeout=2)[0] == 200)
        return self

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def request(instance, method, path, body=None, token=None, headers=None, timeout=30):
    """(status, json or text, headers); status 0 when no answer came (refused, reset or timed out)."""
    connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=timeout)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed, dict(response.getheaders())
    except (OSError, http.client.HTTPException) as error:
        return 0, str(error), {}
    finally:
        connection.close()


def wait_until(seconds, what, condition, interval=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def psql(sql):
    out = subprocess.run([PSQL, DATABASE_URL, "-XAtq", "-F", "\t", "-c", sql], check=True, capture_output=True, text=True, timeout=60)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def wait_numbered(seconds=30):
    """Waits until the sequencer has numbered every event and audit entry written so far."""
    wait_until(seconds, "the sequencer to number every pending event and audit entry",
               lambda: psql("SELECT (SELECT count(*) FROM pending_events) + (SELECT count(*) FROM pending_audit_logs)")[0][0] == "0")


def login(instance, email=ADMIN[0], password=ADMIN[1]):
    status, body, _ = request(instance, "POST", "/api/v1/auth/login", {"email": email, "password": password})
    assert status == 200, f"login on {instance.name}: {status} {body}"
    return body["accessToken"]


def create_executions(instances, token, count, input_, workers=24):
    """Creates `count` executions round-robin; returns the ids of those acknowledged and the other answers."""
    def one(i):
        target = instances[i % len(instances)]
        return request(target, "POST", "/api/v1/executions", {"skillId": input_[0], "input": input_[1]}, token)
    ids, others = [], []
    with futures.ThreadPoolExecutor(workers) as pool:
        for status, body, _ in pool.map(one, range(count)):
            if status in (200, 201, 202):
                ids.append(body["id"])
            else:
                others.append((status, body))
    return ids, others


def statuses(ids):
    wanted = set(ids)
    rows = psql("SELECT id::text, status FROM executions")
    return {row[0]: row[1] for row in rows if row[0] in wanted}


def wait_final(ids, seconds):
    def done():
        seen = statuses(ids)
        return len(seen) == len(ids) and all(status in FINAL for status in seen.values())
    try:
        wait_until(seconds, f"{len(ids)} executions to finish", done, interval=1)
    except AssertionError:
        seen = statuses(ids)
        stuck = {i: s for i, s in seen.items() if s not in FINAL}
        missing = set(ids) - set(seen)
        raise AssertionError(f"{len(stuck)} not final (e.g. {list(stuck.items())[:3]}), {len(missing)} missing")


class EventStream:
    """A Server-Sent Events client on a thread: collects (seq, type, data) frames."""

    def __init__(self, instance, token, types, last_event_id=None):
        self.events, self.error, self.closed = [], None, False
        self.connection = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=60)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", f"/api/v1/events/stream?types={urllib.parse.quote(types)}", headers=headers)
        self.response = self.connection.getresponse()
        assert self.response.status == 200, f"stream on {instance.name}: {self.response.status}"
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        frame = {}
        try:
            while True:
                line = self.response.fp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == "":
                    if "id" in frame and "data" in frame:
                        self.events.append((int(frame["id"]), frame.get("event"), json.loads(frame["data"])))
                    frame = {}
                elif not line.startswith(":") and ":" in line:
                    key, value = line.split(":", 1)
                    frame[key] = value[1:] if value.startswith(" ") else value
        except (OSError, ValueError) as error:
            self.error = error
        self.closed = True

    def resource_ids(self):
        return {event[2].get("resourceId") for event in self.events}

    def close(self):
        try:
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()


def event_seqs(instance, token, types, after, upto):
    """The seqs the events API lists after `after` up to `upto`, paging to the end."""
    seqs, cursor = [], None
    while True:
        query = {"types": types, "after": str(after), "limit": "100"}
        if cursor:
            query["cursor"] = cursor
        status, body, _ = request(instance, "GET", "/api/v1/events?" + urllib.parse.urlencode(query), token=token)
        assert status == 200, f"events API: {status} {body}"
        seqs += [item["seq"] for item in body["items"] if item["seq"] <= upto]
        cursor = body["nextCursor"]
        if not cursor or not body["items"] or body["items"][-1]["seq"] > upto:
            return seqs


# MARK: properties

class Cluster:
    def __init__(self):
        subprocess.run([BIN, "migrate"], env=dict(SHARED_ENV, DATABASE_URL=DATABASE_URL, STEWARD_DATA_DIR=WORK), check=True,
                       capture_output=True, timeout=120)
        subprocess.run([BIN, "seed", "--samples"], env=dict(SHARED_ENV, DATABASE_URL=DATABASE_URL, STEWARD_DATA_DIR=WORK),
                       check=True, capture_output=True, timeout=120)
        self.a = Instance("a").start()
        self.b = Instance("b").start()
        self.c = Instance("c").start()
        self.all = [self.a, self.b, self.c]
        self.token = login(self.a)  # signed by A, used on every instance

    def shutdown(self):
        for instance in self.all:
            instance.stop()


def check_queue(cluster):
    """5,000 executions created round-robin each run exactly once."""
    started = time.monotonic()
    ids, others = create_executions(cluster.all, cluster.token, EXECUTIONS, ("echo", {"message": "queue"}))
    assert not others, f"{len(others)} creations refused, e.g. {others[:3]}"
    created = time.monotonic() - started
    wait_final(ids, 300)
    drained = time.monotonic() - started
    wait_numbered()
    wanted = set(ids)
    counts = {}
    for resource, type_, n in psql("SELECT resource_id, type, count(*) FROM events WHERE type IN ('execution.running', 'execution.succeeded') GROUP BY 1, 2"):
        if resource in wanted:
            counts.setdefault(resource, {})[type_] = int(n)
    wrong = [i for i in ids if counts.get(i) != {"execution.running": 1, "execution.succeeded": 1}]
    assert not wrong, f"{len(wrong)} executions did not run exactly once, e.g. {[(i, counts.get(i)) for i in wrong[:3]]}"
    return f"{len(ids)} created in {created:.1f} s, all succeeded once by {drained:.1f} s"


def check_cron(cluster):
    """A schedule firing every second for 30 s fires exactly once per occurrence; an instance killed half-way
    changes nothing."""
    status, schedule, _ = request(cluster.b, "POST", "/api/v1/schedules", {
        "name": "every second", "target": {"skillId": "echo"}, "input": {"message": "cron"},
        "cron": "* * * * * *", "overlapPolicy": "allow", "catchUp": "all"}, cluster.token)
    assert status == 201, f"schedule: {status} {schedule}"
    time.sleep(15)
    cluster.a.kill9()
    time.sleep(15)
    status, _, _ = request(cluster.b, "PATCH", f"/api/v1/schedules/{schedule['id']}", {"enabled": False}, cluster.token)
    assert status == 200, f"disable: {status}"
    cluster.a.start()
    time.sleep(LEASE_SECONDS + 3)  # a firing claimed by the killed instance is rescued after its lease
    rows = psql(f"SELECT extract(epoch FROM scheduled_for)::bigint, count(*) FROM executions WHERE schedule_id = '{schedule['id']}' GROUP BY 1 ORDER BY 1")
    occurrences = [int(r[0]) for r in rows]
    duplicates = [r for r in rows if int(r[1]) != 1]
    assert not duplicates, f"occurrences fired more than once: {duplicates}"
    assert len(occurrences) >= 25, f"only {len(occurrences)} occurrences fired in 30 s"
    gaps = [(x, y) for x, y in zip(occurrences, occurrences[1:]) if y - x != 1]
    assert not gaps, f"occurrences missing between {gaps}"
    return f"{len(occurrences)} occurrences, each once, no gap, across a kill -9"


def check_realtime(cluster):
    """An SSE client on B sees A's events in order without gaps, and resumes on C after B is killed."""
    types = "execution.succeeded"
    wait_numbered()
    floor = int(psql("SELECT coalesce(max(seq), 0) FROM events")[0][0])
    stream = EventStream(cluster.b, cluster.token, types, last_event_id=floor)
    ids, others = create_executions([cluster.a], cluster.token, 60, ("echo", {"message": "realtime"}), workers=6)
    assert not others, f"creations refused: {others[:3]}"
    wait_until(60, "B's stream to carry 60 executions from A", lambda: set(ids) <= stream.resource_ids())
    seen = [e[0] for e in stream.events]
    assert seen == sorted(set(seen)), "B's stream is out of order or repeats"
    listed = event_seqs(cluster.b, cluster.token, types, floor, seen[-1])
    assert seen == listed, f"B's stream differs from the log: {len(seen)} frames, {len(listed)} events listed"
    last = seen[-1]
    cluster.b.kill9()
    stream.close()
    more, others = create_executions([cluster.a], cluster.token, 40, ("echo", {"message": "realtime"}), workers=6)
    assert not others, f"creations refused: {others[:3]}"
    resumed = EventStream(cluster.c, cluster.token, types, last_event_id=last)
    wait_until(60, "C's resumed stream to carry 40 more", lambda: set(more) <= resumed.resource_ids())
    after = [e[0] for e in resumed.events]
    resumed.close()
    listed = event_seqs(cluster.c, cluster.token, types, last, after[-1])
    assert after == listed and after[0] > last, f"resume on C: {len(after)} frames, {len(listed)} listed, first {after[0]} after {last}"
    cluster.b.start()
    return f"B: {len(seen)} frames in order, C resumed after seq {last} with {len(after)} frames, none lost or repeated"


def register(instance, email):
    return request(instance, "POST", "/api/v1/auth/register",
                   {"email": email, "username": email.split("@")[0], "password": "Member-Password-42!"})


def check_revocation(cluster):
    """A logout or a role change made on one instance applies on the others at the next request."""
    status, user, _ = register(cluster.a, "member@example.com")
    assert status == 201, f"register: {status} {user}"
    token = login(cluster.a, "member@example.com", "Member-Password-42!")
    assert request(cluster.b, "GET", "/api/v1/auth/me", token=token)[0] == 200
    status, _, _ = request(cluster.a, "PUT", f"/api/v1/users/{user['id']}/roles", {"roles": ["viewer"]}, cluster.token)
    assert status == 200, f"set roles: {status}"
    status, body, _ = request(cluster.c, "POST", "/api/v1/executions", {"skillId": "echo", "input": {}}, token)
    assert status == 403, f"a viewer executing on C after demotion on A: {status} {body}"
    assert request(cluster.a, "POST", "/api/v1/auth/logout", token=token)[0] == 204
    status, _, _ = request(cluster.b, "GET", "/api/v1/auth/me", token=token)
    assert status == 401, f"the token on B after logout on A: {status}"
    return "demotion on A was a 403 on C; logout on A was a 401 on B"


def check_ratelimit(cluster):
    """3 × the limit sent across three instances at once is allowed exactly the limit."""
    def one(i):
        return register(cluster.all[i % 3], f"limited{i}@example.com")[0]
    with futures.ThreadPoolExecutor(15) as pool:
        codes = list(pool.map(one, range(30)))
    created, limited = codes.count(201), codes.count(429)
    # The revocation check registered one account from this address an hour's budget ago: 9 remain of 10.
    assert created == 9 and limited == 21, f"{created} created, {limited} limited, others {[c for c in codes if c not in (201, 429)]}"
    return "registrations (10/hour per address, one already used): 9 of 30 allowed across three instances"


def check_idempotency(cluster):
    """The same Idempotency-Key sent to two instances at once creates one execution."""
    rounds = 10
    for n in range(rounds):
        key, marker = secrets.token_hex(8), f"idem-{secrets.token_hex(6)}"
        barrier = threading.Barrier(2)

        def send(instance):
            barrier.wait()
            return request(instance, "POST", "/api/v1/executions", {"skillId": "echo", "input": {"message": marker}},
                           cluster.token, headers={"Idempotency-Key": key})
        with futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(send, [cluster.a, cluster.b]))
        codes = sorted(a[0] for a in answers)
        assert codes in ([202, 202], [202, 409]), f"round {n}: answers {codes} {[a[1] for a in answers]}"
        if codes == [202, 202]:
            assert answers[0][1]["id"] == answers[1][1]["id"], f"round {n}: two executions {answers[0][1]['id']} {answers[1][1]['id']}"
        count = int(psql(f"SELECT count(*) FROM executions WHERE input LIKE '%{marker}%'")[0][0])
        assert count == 1, f"round {n}: {count} executions for one key"
    return f"{rounds} rounds, one execution each"


def check_kill(cluster):
    """kill -9 of an instance running executions loses nothing and leaves nothing stuck."""
    ids, others = create_executions(cluster.all, cluster.token, 200, ("wait", {"seconds": 1}))
    assert not others, f"creations refused: {others[:3]}"
    time.sleep(3)
    running_at_kill = int(psql("SELECT count(*) FROM executions WHERE status = 'running'")[0][0])
    cluster.c.kill9()
    started = time.monotonic()
    wait_final(ids, 200 / 8 + LEASE_SECONDS + 60)
    seen = statuses(ids)
    failed = [i for i, s in seen.items() if s != "succeeded"]
    assert not failed, f"{len(failed)} did not succeed: {[(i, seen[i]) for i in failed[:3]]}"
    took = time.monotonic() - started
    cluster.c.start()
    return f"200 acknowledged, {running_at_kill} running at the kill; all succeeded {took:.1f} s after it"


def check_sequencer(cluster):
    """kill -9 of the instance holding the sequencer lease: another takes it over with the next term within the
    lease time, numbers what was left pending, and the log stays gap-free with an intact audit chain."""
    holder, term = psql("SELECT holder, term FROM leases WHERE name = 'ledger_sequencer'")[0]
    pid = int(holder.split(":")[1])
    victim = next((i for i in cluster.all if i.process and i.process.pid == pid), None)
    assert victim, f"the lease holder {holder} is none of the instances"
    others = [i for i in cluster.all if i is not victim]
    victim.kill9()
    killed = time.monotonic()
    ids, refused = create_executions(others, cluster.token, 100, ("echo", {"message": "sequencer"}))
    assert not refused, f"creations refused: {refused[:3]}"
    wait_numbered(10 + 5)  # the lease (5 s) runs out, the next holder renews within a second, then one pass
    took = time.monotonic() - killed
    new_holder, new_term = psql("SELECT holder, term FROM leases WHERE name = 'ledger_sequencer'")[0]
    assert new_holder != holder and int(new_term) > int(term), f"lease {holder} term {term} -> {new_holder} term {new_term}"
    low, high, count = (int(x) for x in psql("SELECT min(seq), max(seq), count(*) FROM events")[0])
    assert high - low + 1 == count, f"events {low}..{high} hold {count} rows: a gap"
    queued = int(psql(f"SELECT count(*) FROM events WHERE type = 'execution.queued' AND resource_id IN ({','.join(repr(i) for i in ids)})")[0][0])
    assert queued == len(ids), f"{queued} of {len(ids)} execution.queued events numbered"
    verify = subprocess.run([BIN, "audit", "verify"], env=dict(SHARED_ENV, DATABASE_URL=DATABASE_URL, STEWARD_DATA_DIR=WORK),
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, f"audit verify: {verify.stdout} {verify.stderr}"
    victim.start()
    return f"term {term} -> {new_term}; everything numbered {took:.1f} s after the kill; {count} events without a gap; chain intact"


def check_pgrestart(cluster):
    """PostgreSQL restarted under load: 503 with Retry-After, never 500 or a hang; recovery within 10 s."""
    stop = threading.Event()
    answers, slow, acknowledged = [], [], []
    lock = threading.Lock()

    def load(instance):
        i = 0
        while not stop.is_set():
            i += 1
            began = time.monotonic()
            if i % 2:
                status, body, headers = request(instance, "POST", "/api/v1/executions", {"skillId": "echo", "input": {"message": "restart"}}, cluster.token, timeout=25)
            else:
                status, body, headers = request(instance, "GET", "/api/v1/skills?limit=5", token=cluster.token, timeout=25)
            took = time.monotonic() - began
            with lock:
                what = f"{'POST /executions' if i % 2 else 'GET /skills'} on {instance.name} at {began - began_all:+.1f} s"
                answers.append((status, headers.get("Retry-After"), (what, body) if status >= 500 or status == 0 else None))
                if took > 15:
                    slow.append((what, status, round(took, 1)))
                if status in (201, 202) and isinstance(body, dict):
                    acknowledged.append(body["id"])
            time.sleep(0.02)

    began_all = time.monotonic() + 2  # times are printed relative to the restart's start
    threads = [threading.Thread(target=load, args=(instance,)) for instance in cluster.all for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    restart_began = time.monotonic()
    subprocess.run(PG_RESTART, shell=True, check=True, capture_output=True, timeout=90)
    back = time.monotonic()
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join(60)
    recovered = {}
    for instance in cluster.all:
        wait_until(10, f"{instance.name} ready after the restart", lambda: request(instance, "GET", "/health/ready", timeout=2)[0] == 200)
        recovered[instance.name] = round(time.monotonic() - back, 1)
        status, body, _ = request(instance, "POST", "/api/v1/executions", {"skillId": "echo", "input": {}}, cluster.token)
        assert status == 202, f"{instance.name} after the restart: {status} {body}"
        acknowledged.append(body["id"])
    errors = [a for a in answers if a[0] >= 500 and not (a[0] == 503 and a[1])]
    unanswered = [a for a in answers if a[0] == 0]
    unavailable = sum(1 for a in answers if a[0] == 503)
    assert not errors, f"{len(errors)} server errors without 503 + Retry-After, e.g. {errors[:3]}"
    assert not unanswered, f"{len(unanswered)} requests got no answer, e.g. {unanswered[:3]}"
    assert not slow, f"requests hung for more than 15 s: {slow[:5]}"
    wait_final(acknowledged, 60)
    return (f"{len(answers)} requests during a {back - restart_began:.1f} s restart: {unavailable} answered 503 with "
            f"Retry-After, none 500 or unanswered; ready again after {recovered} s; {len(acknowledged)} acknowledged "
            f"executions all finished")


class Receiver(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def check_listen(cluster):
    """LISTEN connections terminated: each instance reconnects and catches up from the log, losing no event for
    its streams or its webhooks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    status, hook, _ = request(cluster.a, "POST", "/api/v1/webhooks", {
        "url": f"http://127.0.0.1:{server.server_address[1]}/hook", "events": ["execution.succeeded"]}, cluster.token)
    assert status == 201, f"webhook: {status} {hook}"
    wait_numbered()
    floor = int(psql("SELECT coalesce(max(seq), 0) FROM events")[0][0])
    stream = EventStream(cluster.b, cluster.token, "execution.succeeded", last_event_id=floor)
    terminated = psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
    assert len(terminated) >= 3, f"found {len(terminated)} LISTEN sessions, expected one per instance"
    ids, others = create_executions([cluster.a, cluster.c], cluster.token, 30, ("echo", {"message": "listen"}), workers=6)
    assert not others, f"creations refused: {others[:3]}"
    wait_until(60, "B's stream to carry every execution after the LISTEN drop", lambda: set(ids) <= stream.resource_ids())
    stream.close()

    def delivered():
        return {(r.get("data") or {}).get("resourceId") for r in Receiver.received}
    wait_until(90, "webhook deliveries of every execution after the LISTEN drop", lambda: set(ids) <= delivered())
    server.shutdown()
    request(cluster.a, "DELETE", f"/api/v1/webhooks/{hook['id']}", token=cluster.token)
    # Events reach the streams without notifications too (the hub also polls the log each second), so what this
    # property checks beyond "nothing lost" is that every instance listens again.
    def listening():
        return int(psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")[0][0])
    wait_until(15, "every instance to LISTEN again", lambda: listening() >= len(terminated))
    relisten = listening()
    return f"{len(terminated)} LISTEN sessions cut; the stream and webhooks got all 30 events; {relisten} LISTEN sessions again"


def check_pgbouncer(cluster):
    """The core flows through PgBouncer in transaction mode, with LISTEN on a direct connection."""
    if not BOUNCER_URL:
        raise AssertionError("CLUSTER_BOUNCER_URL is not set")
    d = Instance("d", database_url=BOUNCER_URL, extra={"STEWARD_DATABASE_LISTEN_URL": DATABASE_URL, "STEWARD_AUTO_MIGRATE": "false"}).start()
    cluster.all.append(d)
    token = login(d)
    status, skill, _ = request(d, "POST", "/api/v1/skills", {"slug": "bounced", "name": "Bounced", "runner": {"type": "builtin", "name": "echo"}}, token)
    assert status == 201, f"skill through PgBouncer: {status} {skill}"
    wait_numbered()
    floor = int(psql("SELECT coalesce(max(seq), 0) FROM events")[0][0])
    stream = EventStream(d, token, "execution.succeeded", last_event_id=floor)
    ids, others = create_executions([d, cluster.a], token, 40, ("bounced", {"message": "bouncer"}), workers=8)
    assert not others, f"creations refused: {others[:3]}"
    wait_final(ids, 60)
    wait_until(30, "D's stream (through PgBouncer) to carry executions from D and A", lambda: set(ids) <= stream.resource_ids())
    stream.close()
    status, page, _ = request(d, "GET", "/api/v1/executions?limit=50", token=token)
    assert status == 200 and len(page["items"]) == 50, f"list through PgBouncer: {status}"
    assert request(d, "POST", "/api/v1/auth/logout", token=token)[0] == 204
    assert request(cluster.b, "GET", "/api/v1/auth/me", token=token)[0] == 401
    return "skill, 40 executions, stream, list and logout through PgBouncer in transaction mode"


CHECKS = [("revocation", check_revocation), ("ratelimit", check_ratelimit), ("idempotency", check_idempotency),
          ("queue", check_queue), ("realtime", check_realtime), ("cron", check_cron), ("kill", check_kill),
          ("sequencer", check_sequencer), ("listen", check_listen), ("pgrestart", check_pgrestart), ("pgbouncer", check_pgbouncer)]


def main():
    only = None
    if len(sys.argv) > 2 and sys.argv[1] == "--only":
        only = set(sys.argv[2].split(","))
    cluster = Cluster()
    failures = 0
    try:
        for name, check in CHECKS:
            if only and name not in only:
                continue
            began = time.monotonic()
            try:
                result = check(cluster)
                print(f"PASS {name} ({time.monotonic() - began:.0f} s): {result}", flush=True)
            except Exception as error:  # noqa: BLE001 - every failure is reported, then the next property runs
                failures += 1
                print(f"FAIL {name} ({time.monotonic() - began:.0f} s): {type(error).__name__}: {error}", flush=True)
                for instance in cluster.all:
                    if instance.process and instance.process.poll() is not None:
                        instance.start()
    finally:
        cluster.shutdown()
    if not failures:
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print(f"instance logs and data directories kept in {WORK}")
        for instance in cluster.all:
            with open(instance.log) as log:
                tail = log.readlines()[-30:]
            print(f"--- last lines of {instance.name}'s log ---\n" + "".join(tail))
    print(f"cluster suite: {len(CHECKS) - failures if not only else len(only) - failures} passed, {failures} failed")
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(main())
