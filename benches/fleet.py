#!/usr/bin/env python3
"""Fleet test: three `ternlm serve` replicas behind HAProxy, under load (stdlib only).

The replicas listen on 127.0.0.1 ports; HAProxy (the Debian package `haproxy`, 2.6) fronts
them with the configuration in benches/fleet_haproxy.cfg.in:

- health checks on GET /health/ready (every --inter-ms, --fall failures mark a replica down,
  --rise successes up again);
- a request with an `X-Session-Id` header is routed by a consistent hash of it (all turns of a
  conversation reach the replica that holds its prompt cache), one without by least
  connections, and one with `X-Balance: roundrobin` by plain round robin (for comparison);
- retries on a refused connection, on an empty response and on a 503 (ternlm answers 503 to
  new requests while it drains after SIGTERM, before doing any work), each to another server.

The load is a bounded number of chat sessions (threads), each running multi-turn
conversations: every turn re-sends the whole conversation plus a new user message
(temperature 0, a few tokens generated). Half the sessions stream (SSE, with usage); most
send `X-Session-Id`, the others go by least connections. Every request is recorded: its
status, error, the replica that answered (HAProxy's `X-Served-By`), HAProxy's retries,
prompt and cached tokens, and its start and end.

Phases, each checked (the exit status is 1 when a check fails):

(c) prompt cache: the same shape of workload (--sessions sessions, --conversations
    conversations each of --turns turns, nothing streamed), once with session affinity and
    once with plain round robin. The hit rate is sum(cached_tokens) / sum(prompt_tokens); all
    conversations share the chat template's system prompt, which every replica caches, so
    round robin gets some hits too. Affinity must beat round robin by --min-hit-gain, and with
    affinity at least --min-reuse of the follow-up turns must reuse their own conversation's
    cache (cached_tokens >= the previous turn's prompt). Runs first, on fresh replicas, and
    checks that the clients' cached_tokens add up to the replicas' /metrics.
(a) rolling restart under load: for each replica in turn (once it runs a request), SIGTERM
    it, wait until it exits (status 0, within --grace) and HAProxy marks it down, start it
    again on the same port, wait until HAProxy marks it up. No request may fail: those it
    runs finish during its drain, and the new ones it answers 503 are retried elsewhere.
(b) SIGKILL under load: kill the replica streaming the most answers (then: running the most
    requests). Only requests that were in flight on it may fail, each with a clean error at
    the client: an HTTP error status (HAProxy's 502) or a transport error (a cut stream: the
    chunked body ends without its last chunk); never a timeout, never a 200 with a broken
    body, never a stream that ends without `[DONE]`. With the default --retry-on, the
    non-streamed requests it ran are replayed elsewhere and succeed; streams whose headers
    went out cannot be, and fail. HAProxy must mark it down within fall x inter (+ a margin),
    no request started after the kill may fail, and none started after it is marked down may
    reach it. It is restarted at the end and the fleet must be whole again.

Everything runs within --budget seconds (default 180: the whole script, replicas' start
included), every wait has its own timeout, and the replicas and HAProxy are stopped and the
temporary directory removed however the script ends (the replicas' and HAProxy's logs are
printed when a check fails; --keep keeps the directory).

    python3 benches/fleet.py [--bin target/release/ternlm] [--model PATH] [--json fleet.json]

HAProxy is installed with apt-get when it is missing and the script runs as root (CI: Debian 12
as root); otherwise it says how to install it and fails. Without --model the replicas serve
`-m smollm2-135m --offline`: the default catalog model from the cache ($TERNLM_HOME).
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = time.monotonic()

TOPICS = [
    "how bees make honey",
    "why the sky is blue",
    "how a bicycle stays upright",
    "what a compiler does",
    "how bread rises",
    "why leaves change colour in autumn",
    "how a refrigerator keeps food cold",
    "what causes the tides",
    "how a violin makes sound",
    "why cats purr",
    "how glass is made",
    "what a black hole is",
]
FOLLOW_UPS = [
    "Can you explain that in more detail?",
    "Why is that so? Give one reason.",
    "Give me a simple example of it.",
    "Summarize everything you said in one sentence.",
    "What is a common misconception about it?",
]


def now():
    """Seconds since the script started."""
    return time.monotonic() - T0


def say(msg):
    print(f"[{now():6.1f}s] {msg}", flush=True)


class Budget(Exception):
    pass


class Check:
    """Collects failed assertions; the script exits 1 when there is any."""

    def __init__(self):
        self.failed = []

    def __call__(self, ok, what):
        print(f"    {'ok  ' if ok else 'FAIL'} {what}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


# ---------------------------------------------------------------------------------------------
# Processes


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def with_pdeathsig(cmd):
    """Runs cmd so that it is killed if this script dies without cleaning up (SIGKILL)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def tail(path, lines=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({e})\n"


def count_lines(path, needle):
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0


class Replica:
    def __init__(self, name, port, cmd, tmp):
        self.name, self.port, self.cmd, self.tmp = name, port, cmd, tmp
        self.proc = None
        self.generation = 0
        self.log_path = None
        self.logs = []

    def start(self):
        self.log_path = os.path.join(self.tmp, f"{self.name}.{self.generation}.log")
        self.logs.append(self.log_path)
        self.generation += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(with_pdeathsig(self.cmd + ["--port", str(self.port)]), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def wait_serving(self, timeout):
        """Until the replica prints that it serves (it has loaded the model)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if f"on http://127.0.0.1:{self.port}" in tail(self.log_path, 50):
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting:\n{tail(self.log_path)}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start within {timeout}s:\n{tail(self.log_path)}")

    def get(self, path, timeout=2.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    def ready_state(self):
        """/health/ready's JSON ({} when the replica does not answer)."""
        try:
            return json.loads(self.get("/health/ready", timeout=1.0)[1])
        except (OSError, ValueError, http.client.HTTPException):
            return {}

    def metrics(self):
        """The replica's Prometheus counters, by name (labels dropped, values summed)."""
        out = {}
        status, text = self.get("/metrics", timeout=3.0)
        if status != 200:
            return out
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            name = name.split("{")[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                pass
        return out

    def stop(self, sig=signal.SIGKILL, timeout=5.0):
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.proc.kill()
                self.proc.wait(timeout=5)


class HAProxy:
    def __init__(self, exe, tmp, port, replicas, args):
        self.exe, self.tmp, self.port = exe, tmp, port
        self.sock = os.path.join(tmp, "haproxy.sock")
        self.cfg = os.path.join(tmp, "haproxy.cfg")
        self.log_path = os.path.join(tmp, "haproxy.log")
        self.proc = None

        def servers(extra):
            return "\n".join(f"    server {r.name} 127.0.0.1:{r.port}{extra(r)}" for r in replicas)

        with open(os.path.join(HERE, "fleet_haproxy.cfg.in")) as f:
            template = string.Template(f.read())
        text = template.substitute(
            stats_socket=self.sock,
            retry_on=args.retry_on,
            inter_ms=args.inter_ms,
            fall=args.fall,
            rise=args.rise,
            port=port,
            affinity_servers=servers(lambda r: " check"),
            leastconn_servers=servers(lambda r: f" track affinity/{r.name}"),
            rr_servers=servers(lambda r: f" track affinity/{r.name}"),
        )
        with open(self.cfg, "w") as f:
            f.write(text)

    def start(self):
        check = subprocess.run([self.exe, "-c", "-q", "-f", self.cfg], capture_output=True, text=True, timeout=20)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects its configuration:\n{check.stdout}{check.stderr}")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(with_pdeathsig([self.exe, "-db", "-f", self.cfg]), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def command(self, cmd, timeout=3.0):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.sock)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks).decode(errors="replace")
        finally:
            s.close()

    def states(self):
        """{server name: status} in the health-checked backend ('UP', 'DOWN', 'UP 1/2', ...)."""
        try:
            text = self.command("show stat")
        except OSError:
            return {}
        lines = text.splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        header = lines[0][2:].split(",")
        ix, sx, stx = header.index("pxname"), header.index("svname"), header.index("status")
        out = {}
        for line in lines[1:]:
            f = line.split(",")
            if len(f) > stx and f[ix] == "affinity" and f[sx] not in ("FRONTEND", "BACKEND"):
                out[f[sx]] = f[stx]
        return out

    def wait_state(self, names, state, timeout):
        """Until every server in names has exactly `state`; the time it took (None: timeout)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            st = self.states()
            if all(st.get(n) == state for n in names):
                return time.monotonic() - start
            time.sleep(0.05)
        return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def find_haproxy():
    exe = shutil.which("haproxy") or (os.path.exists("/usr/sbin/haproxy") and "/usr/sbin/haproxy")
    if exe:
        return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("haproxy not found: installing the Debian package (apt-get install -y haproxy)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "haproxy"]
        try:
            if subprocess.run(cmd, env=env, timeout=600).returncode != 0:
                subprocess.run(["apt-get", "update"], env=env, timeout=600, check=True)
                subprocess.run(cmd, env=env, timeout=600, check=True)
        except (subprocess.SubprocessError, OSError) as e:
            sys.exit(f"fleet: could not install haproxy with apt-get: {e}")
        exe = shutil.which("haproxy") or (os.path.exists("/usr/sbin/haproxy") and "/usr/sbin/haproxy")
        if exe:
            return exe
    sys.exit("fleet: haproxy is not installed (Debian/Ubuntu: `sudo apt-get install -y haproxy`; " "this script installs it itself when it runs as root with apt-get)")


# ---------------------------------------------------------------------------------------------
# Load


def chat(port, messages, headers, stream, max_tokens, timeout, rec):
    """One chat completion through HAProxy, recorded into rec (which others may watch)."""
    rec.update({"t0": now(), "stream": stream, "max_tokens": max_tokens, "status": None, "ok": False, "error": None, "clean": True, "served_by": None, "retries": None})
    rec.update({"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "content": ""})
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json", **headers})
        resp = conn.getresponse()
        rec["status"] = resp.status
        rec["served_by"] = resp.getheader("X-Served-By")
        try:
            rec["retries"] = int(resp.getheader("X-Retries", ""))
        except ValueError:
            pass
        if resp.status != 200:
            data = resp.read()
            rec["error"] = f"http {resp.status}"
            rec["detail"] = data[:200].decode(errors="replace")
            return rec
        usage, parts, done, err_event = None, [], False, None
        if not stream:
            data = resp.read()
            try:
                obj = json.loads(data)
                parts.append(obj["choices"][0]["message"]["content"])
                usage = obj["usage"]
            except (ValueError, KeyError, IndexError, TypeError):
                rec["error"], rec["clean"] = "200 with a broken body", False
                rec["detail"] = data[:200].decode(errors="replace")
                return rec
            done = True
        else:
            # read1, not line iteration: iterating an HTTPResponse reads lines through peek(),
            # which takes a chunked body cut at a chunk boundary (HAProxy closing the client
            # connection after the replica died mid-stream) for a complete one. read1 raises
            # IncompleteRead there, as curl or httpx (the openai package) report an error.
            pending = b""
            while True:
                if time.monotonic() > deadline:
                    raise socket.timeout("stream past its deadline")
                data = resp.read1(65536)
                if not data:
                    break
                pending += data
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    if not line.startswith("data: ") or done:
                        continue
                    payload = line[6:]
                    if payload == "[DONE]":
                        done = True
                        continue
                    try:
                        ev = json.loads(payload)
                    except ValueError:
                        rec["error"], rec["clean"] = "200 stream with a broken event", False
                        rec["detail"] = payload[:200]
                        return rec
                    if "error" in ev:
                        err_event = ev["error"]
                        continue
                    if ev.get("usage"):
                        usage = ev["usage"]
                    for ch in ev.get("choices") or []:
                        parts.append((ch.get("delta") or {}).get("content") or "")
        if err_event is not None:
            # An error event in the stream: explicit, so clean.
            rec["error"] = "error event in the stream"
            rec["detail"] = json.dumps(err_event)[:200]
        elif not done:
            # The stream ended cleanly at the HTTP level but without `[DONE]`: a client
            # (the openai package, say) would take a cut answer for a whole one.
            rec["error"], rec["clean"] = "200 stream ended without [DONE]", False
        elif usage is None:
            rec["error"], rec["clean"] = "200 without usage", False
        else:
            rec["ok"] = True
            rec["prompt_tokens"] = usage.get("prompt_tokens", 0)
            rec["cached_tokens"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            rec["completion_tokens"] = usage.get("completion_tokens", 0)
            rec["content"] = "".join(parts)
    except socket.timeout as e:
        rec["error"], rec["clean"] = f"timeout ({e or 'no answer'} after {timeout}s)", False
    except (OSError, http.client.HTTPException) as e:
        # A refused or reset connection, a cut chunked stream (IncompleteRead): a transport
        # error the client sees at once.
        rec["error"] = f"transport: {type(e).__name__}"
        rec["detail"] = str(e)[:200]
    finally:
        conn.close()
        rec["t1"] = now()
    return rec


class Load:
    """--sessions threads, each running conversations until `stop` (or `conversations` each)."""

    def __init__(self, args, port, tag, route, stream_odd=True, conversations=None, long_session=False):
        self.args, self.port, self.tag, self.route = args, port, tag, route
        self.long_session = long_session
        self.stream_odd, self.conversations = stream_odd, conversations
        self.records = []
        # Each session's request in flight (its record, which gets served_by as soon as the
        # response headers arrive): which replica runs which request, for phase (b).
        self.live = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.session, args=(i,), daemon=True) for i in range(args.sessions)]

    def headers(self, i, sid):
        route = self.route(i)
        if route == "affinity":
            return route, {"X-Session-Id": sid}
        if route == "roundrobin":
            return route, {"X-Balance": "roundrobin"}
        return route, {}

    def session(self, i):
        a = self.args
        conv = 0
        while not self.stop.is_set() and (self.conversations is None or conv < self.conversations):
            sid = f"{self.tag}-s{i}-c{conv}"
            route, headers = self.headers(i, sid)
            stream = self.stream_odd and i % 2 == 1
            max_tokens = a.max_tokens
            if self.long_session and i == 0:
                # One long streamed answer at a time, so that drains have work to finish.
                stream, max_tokens = True, a.long_tokens
            topic = TOPICS[(i * 5 + conv * 7) % len(TOPICS)]
            messages = [{"role": "user", "content": f"Conversation {sid}. Explain {topic}, briefly."}]
            for turn in range(a.turns):
                if self.stop.is_set() and self.conversations is None:
                    break
                rec = {"session": i, "conv": conv, "turn": turn, "route": route}
                self.live[i] = rec
                chat(self.port, messages, headers, stream, max_tokens, a.request_timeout, rec)
                self.live.pop(i, None)
                self.records.append(rec)
                if not rec["ok"]:
                    break
                messages = messages + [{"role": "assistant", "content": rec.pop("content")}, {"role": "user", "content": FOLLOW_UPS[(i + conv + turn) % len(FOLLOW_UPS)]}]
            conv += 1

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self, timeout):
        """Stops the sessions (each ends its current request) and waits for them."""
        self.stop.set()
        return self.join(timeout)

    def join(self, timeout):
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        return [i for i, t in enumerate(self.threads) if t.is_alive()]


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary(records):
    ok = [r for r in records if r["ok"]]
    failed = [r for r in records if not r["ok"]]
    kinds = {}
    for r in failed:
        kinds[r["error"]] = kinds.get(r["error"], 0) + 1
    served = {}
    for r in ok:
        served[r["served_by"]] = served.get(r["served_by"], 0) + 1
    lat = [r["t1"] - r["t0"] for r in ok]
    prompt = sum(r["prompt_tokens"] for r in ok)
    cached = sum(r["cached_tokens"] for r in ok)
    follow = [r for r in ok if r["turn"] > 0]
    fprompt = sum(r["prompt_tokens"] for r in follow)
    # A follow-up turn reused its own conversation's cache when at least the whole previous
    # turn's prompt came from the cache (conversations share no more than the chat
    # template's system prompt with each other).
    prev = {(r["session"], r["conv"], r["turn"]): r["prompt_tokens"] for r in ok}
    reused = [r for r in follow if (r["session"], r["conv"], r["turn"] - 1) in prev and r["cached_tokens"] >= prev[(r["session"], r["conv"], r["turn"] - 1)]]
    return {
        "requests": len(records),
        "ok": len(ok),
        "failed": len(failed),
        "failures_by_kind": kinds,
        "unclean_failures": sum(1 for r in failed if not r["clean"]),
        "retried": sum(1 for r in records if (r["retries"] or 0) > 0),
        "served_by": dict(sorted(served.items(), key=lambda kv: str(kv[0]))),
        "streamed": sum(1 for r in records if r["stream"]),
        "latency_p50_s": round(pct(lat, 0.5), 3) if lat else None,
        "latency_p95_s": round(pct(lat, 0.95), 3) if lat else None,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_rate": round(cached / prompt, 4) if prompt else 0.0,
        "follow_up_hit_rate": round(sum(r["cached_tokens"] for r in follow) / fprompt, 4) if fprompt else 0.0,
        "follow_ups": len(follow),
        "follow_ups_reusing_their_conversation": len(reused),
        "conversation_reuse_rate": round(len(reused) / len(follow), 4) if follow else 0.0,
    }


def show(name, s):
    kinds = ", ".join(f"{k}: {v}" for k, v in s["failures_by_kind"].items()) or "none"
    served = " ".join(f"{k}={v}" for k, v in s["served_by"].items())
    print(
        f"    {name}: {s['requests']} requests ({s['streamed']} streamed), {s['ok']} ok, {s['failed']} failed ({kinds}), {s['retried']} retried by haproxy; "
        f"served by {served}; latency p50 {s['latency_p50_s']}s p95 {s['latency_p95_s']}s",
        flush=True,
    )


def describe(r):
    kind = "stream" if r["stream"] else "whole"
    where = f"{r['t0']:.2f}s-{r['t1']:.2f}s via {r['served_by']} retries={r['retries']}"
    return f"session {r['session']} conv {r['conv']} turn {r['turn']} ({r['route']}, {kind}) {where}: {r['error']} {r.get('detail', '')[:120]!r}"


# ---------------------------------------------------------------------------------------------
# Phases


def phase_cache(args, fleet, ha, check, out):
    print(f"(c) prompt cache: {args.sessions} sessions x {args.conversations} conversations x {args.turns} turns, affinity vs round robin", flush=True)
    res = {}
    for mode in ("affinity", "roundrobin"):
        before = [r.metrics() for r in fleet]
        load = Load(args, ha.port, f"cache-{mode}", lambda i, m=mode: m, stream_odd=False, conversations=args.conversations).start()
        stuck = load.join(120)
        after = [r.metrics() for r in fleet]
        s = summary(load.records)
        key = "ternlm_prompt_tokens_cached_total"
        s["server_cached_tokens"] = int(sum(a.get(key, 0) - b.get(key, 0) for a, b in zip(after, before)))
        res[mode] = s
        show(mode, s)
        print(
            f"      hit rate {s['hit_rate']:.3f} (follow-up turns {s['follow_up_hit_rate']:.3f}): {s['cached_tokens']} of {s['prompt_tokens']} prompt tokens cached "
            f"(replicas' {key}: +{s['server_cached_tokens']}); {s['follow_ups_reusing_their_conversation']} of {s['follow_ups']} follow-up turns "
            f"reused their conversation's cache ({s['conversation_reuse_rate']:.2f})",
            flush=True,
        )
        check(not stuck, f"{mode}: every session finished")
        check(s["failed"] == 0, f"{mode}: no request failed")
        for r in load.records:
            if not r["ok"]:
                print(f"      {describe(r)}")
        expected = args.sessions * args.conversations * args.turns
        check(s["requests"] == expected, f"{mode}: {expected} requests made")
        check(s["server_cached_tokens"] == s["cached_tokens"], f"{mode}: the clients' cached_tokens add up to the replicas' {key}")
    gain = res["affinity"]["hit_rate"] - res["roundrobin"]["hit_rate"]
    res["gain"] = round(gain, 4)
    reuse = res["affinity"]["conversation_reuse_rate"]
    check(reuse >= args.min_reuse, f"with affinity, {reuse:.2f} of follow-up turns reused their conversation's cache (at least {args.min_reuse})")
    check(gain >= args.min_hit_gain, f"affinity's hit rate beats round robin's by {gain:.3f} (at least {args.min_hit_gain})")
    out["cache"] = res


def wait_running(replica, n, timeout):
    """Until the replica runs at least n requests (or timeout); what it last reported."""
    end = time.monotonic() + timeout
    while True:
        st = replica.ready_state()
        if st.get("running", 0) >= n or time.monotonic() > end:
            return st
        time.sleep(0.05)


def route_mixed(i):
    """Sessions 2, 5, 8... have no session header (least connections); the others do."""
    return "leastconn" if i % 3 == 2 else "affinity"


def phase_rolling(args, fleet, ha, check, out):
    print(f"(a) rolling restart under load ({args.sessions} sessions, one streaming {args.long_tokens}-token answers): SIGTERM, wait, start again, one after another", flush=True)
    load = Load(args, ha.port, "rolling", route_mixed, long_session=True).start()
    time.sleep(args.settle)
    steps = []
    for r in fleet:
        # SIGTERM while the replica runs something, so that its drain has work to finish.
        st = wait_running(r, 1, 3.0)
        t = now()
        r.proc.send_signal(signal.SIGTERM)
        step = {"replica": r.name, "sigterm_at": round(t, 3), "running_at_sigterm": st.get("running", 0), "queued_at_sigterm": st.get("queued", 0)}
        try:
            code = r.proc.wait(timeout=args.grace + 10)
        except subprocess.TimeoutExpired:
            code = None
        step["exit_after_s"] = round(now() - t, 2)
        down = ha.wait_state([r.name], "DOWN", 10)
        step["down_after_s"] = None if down is None else round(now() - t, 2)
        step["exit_code"] = code
        check(down is not None, f"{r.name}: haproxy marks it down after SIGTERM ({step['down_after_s']}s)")
        check(code == 0, f"{r.name}: exits with status 0 within --grace + 10s (status {code}, {step['exit_after_s']}s after SIGTERM)")
        if code is None:
            r.stop()
        step["answered_503_while_draining"] = count_lines(r.log_path, " /v1/chat/completions 503 ")
        r.start()
        r.wait_serving(60)
        up = ha.wait_state([r.name], "UP", 30)
        step["up_after_s"] = None if up is None else round(now() - t, 2)
        check(up is not None, f"{r.name}: back up in haproxy {step['up_after_s']}s after its SIGTERM")
        steps.append(step)
        if up is None:
            break
    time.sleep(args.settle)
    stuck = load.finish(args.request_timeout + 5)
    s = summary(load.records)
    show("rolling restart", s)
    for r in load.records:
        if not r["ok"]:
            print(f"      {describe(r)}")
    for st in steps:
        # Requests the replica was running when it got SIGTERM, answered by it during its drain.
        drained = [x for x in load.records if x["ok"] and x["served_by"] == st["replica"] and x["t0"] < st["sigterm_at"] < x["t1"]]
        st["finished_during_drain"] = len(drained)
        st["longest_finished_during_drain_s"] = round(max((x["t1"] - st["sigterm_at"] for x in drained), default=0.0), 2)
        print(
            f"    {st['replica']}: SIGTERM while running {st['running_at_sigterm']}; {st['finished_during_drain']} requests in flight finished during the drain "
            f"(the last {st['longest_finished_during_drain_s']}s after SIGTERM), {st['answered_503_while_draining']} new ones got 503 and went elsewhere; "
            f"down in haproxy after {st['down_after_s']}s, exited after {st['exit_after_s']}s, up again {st['up_after_s']}s after SIGTERM",
            flush=True,
        )
    if not any(st["finished_during_drain"] for st in steps):
        print("    (note: no request was running at any SIGTERM, so no drain had work to finish)")
    check(not stuck, "every session ended (no request hung)")
    check(s["failed"] == 0, f"no request lost during the rolling restart ({s['failed']} failed of {s['requests']})")
    out["rolling_restart"] = {**s, "steps": steps}


def phase_kill(args, fleet, ha, check, out):
    print(f"(b) SIGKILL under load ({args.sessions} sessions)", flush=True)
    load = Load(args, ha.port, "kill", route_mixed, long_session=True).start()
    time.sleep(args.settle)

    # The victim: the replica streaming the most answers, then running the most requests;
    # waiting a little for one that streams at least one and runs at least two, so that the
    # kill cuts a stream (which HAProxy cannot replay) and hits requests in flight.
    def streaming_on(live, name):
        return [x for x in live if x.get("stream") and x.get("served_by") == name and "t1" not in x]

    end = time.monotonic() + 4
    while True:
        states = {r.name: r.ready_state() for r in fleet}
        live = [dict(x) for x in list(load.live.values())]
        victim = max(fleet, key=lambda r: (len(streaming_on(live, r.name)), states[r.name].get("running", 0)))
        st = states[victim.name]
        if (streaming_on(live, victim.name) and st.get("running", 0) >= 2) or time.monotonic() > end:
            break
        time.sleep(0.05)
    cut = {(x["session"], x["conv"], x["turn"]) for x in streaming_on(live, victim.name)}
    t_kill = now()
    victim.proc.kill()
    victim.proc.wait(timeout=5)
    down = ha.wait_state([victim.name], "DOWN", 10)
    t_down = None if down is None else t_kill + down
    limit = args.fall * args.inter_ms / 1000 + args.detect_margin
    took = "never" if down is None else f"{down:.2f}s"
    check(down is not None and down <= limit, f"haproxy marks {victim.name} down {took} after the kill (at most fall x inter + {args.detect_margin}s = {limit:.2f}s)")
    time.sleep(args.after_kill)
    stuck = load.finish(args.request_timeout + 5)
    recs = load.records
    s = summary(recs)
    show("kill", s)
    in_flight = [r for r in recs if r["t0"] < t_kill < r["t1"]]
    failed = [r for r in recs if not r["ok"]]
    for r in failed:
        print(f"      {describe(r)}")
    streams_cut = [r for r in recs if (r["session"], r["conv"], r["turn"]) in cut]
    replayed = [r for r in in_flight if (r["retries"] or 0) > 0 and r["ok"]]
    print(
        f"    killed {victim.name} at {t_kill:.2f}s while it reported {st.get('running', 0)} running and {st.get('queued', 0)} queued, {len(cut)} of them streams "
        f"already answering; {len(in_flight)} requests were in flight (all replicas); {len(failed)} failed; "
        f"{len(replayed)} in flight at the kill succeeded after a retry (replayed on another replica)",
        flush=True,
    )
    check(not stuck, "every session ended (no request hung)")
    check(s["unclean_failures"] == 0, "every failure is clean (an error status or a transport error; no timeout, no 200 with a broken or cut body)")
    check(all(r["t0"] < t_kill < r["t1"] for r in failed), "only requests in flight at the kill failed")
    check(all(r["served_by"] == victim.name for r in failed), f"every failed request was on {victim.name}")
    held = st.get("running", 0) + st.get("queued", 0)
    what = f"{st.get('running', 0)} running + {st.get('queued', 0)} queued, +1 for the race"
    check(len(failed) <= held + 1, f"no more failures ({len(failed)}) than requests {victim.name} held just before the kill ({what})")
    later = [r for r in recs if r["t0"] > t_kill]
    check(all(r["ok"] for r in later), f"every request started after the kill succeeded ({len(later)})")
    if t_down is not None:
        after_down = [r for r in recs if r["t0"] > t_down + 0.05]
        elsewhere = bool(after_down) and all(r["served_by"] != victim.name for r in after_down)
        check(elsewhere, f"requests started after {victim.name} was marked down went to the others ({len(after_down)})")
    t = now()
    victim.start()
    victim.wait_serving(60)
    up = ha.wait_state([r.name for r in fleet], "UP", 30)
    check(up is not None, f"{victim.name} restarted: the fleet is whole again ({now() - t:.1f}s)")
    out["kill"] = {
        **s,
        "victim": victim.name,
        "victim_running_at_kill": st.get("running", 0),
        "victim_queued_at_kill": st.get("queued", 0),
        "victim_streams_answering_at_kill": len(cut),
        "streams_cut": sum(1 for r in streams_cut if not r["ok"]),
        "in_flight_at_kill": len(in_flight),
        "replayed_after_kill": len(replayed),
        "down_after_s": None if down is None else round(down, 3),
        "failures": [describe(r) for r in failed],
    }


# ---------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/ternlm", help="the ternlm binary (default: %(default)s)")
    p.add_argument("--model", help="a model file for the replicas (default: the catalog's smollm2-135m from the cache, offline)")
    p.add_argument("--json", help="write the numbers to this file")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--parallel", type=int, default=4, help="each replica's --parallel (its prompt cache keeps as many conversations)")
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1, help="each replica's -t")
    p.add_argument("--grace", type=int, default=20, help="each replica's --grace")
    p.add_argument("--max-queue", type=int, default=16)
    p.add_argument("--sessions", type=int, default=6, help="concurrent chat sessions")
    p.add_argument("--turns", type=int, default=6, help="turns per conversation")
    p.add_argument("--conversations", type=int, default=3, help="conversations per session in the prompt-cache phase")
    p.add_argument("--max-tokens", type=int, default=20)
    p.add_argument("--long-tokens", type=int, default=160, help="max_tokens of the one long streaming session in phases (a) and (b)")
    p.add_argument("--request-timeout", type=float, default=30.0, help="a request taking longer is a hang: a failure")
    p.add_argument("--inter-ms", type=int, default=500, help="health check interval")
    p.add_argument("--fall", type=int, default=2)
    p.add_argument("--rise", type=int, default=2)
    p.add_argument("--retry-on", default="conn-failure empty-response 503", help="haproxy's retry-on (default: %(default)s)")
    p.add_argument("--min-hit-gain", type=float, default=0.15, help="how much affinity's prompt-cache hit rate must beat round robin's (measured: 0.25-0.32)")
    p.add_argument("--min-reuse", type=float, default=0.75, help="the share of follow-up turns that reuse their conversation's cache with affinity, at least (measured: 0.86-1.0)")
    p.add_argument("--detect-margin", type=float, default=1.0, help="seconds beyond fall x inter that detecting a dead replica may take")
    p.add_argument("--settle", type=float, default=2.0, help="seconds of load before and after a disruption")
    p.add_argument("--after-kill", type=float, default=3.0, help="seconds of load after the killed replica is marked down")
    p.add_argument("--phases", default="cache,rolling,kill", help="which phases to run, in order (default: %(default)s)")
    p.add_argument("--budget", type=int, default=180, help="seconds the whole run may take (0: no limit)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, haproxy.cfg)")
    args = p.parse_args()

    phases = {"cache": phase_cache, "rolling": phase_rolling, "kill": phase_kill}
    wanted = [x.strip() for x in args.phases.split(",") if x.strip()]
    if not wanted or any(x not in phases for x in wanted):
        sys.exit(f"fleet: --phases takes a comma-separated list of {', '.join(phases)}")
    exe = os.path.abspath(args.bin)
    if not os.access(exe, os.X_OK):
        sys.exit(f"fleet: no ternlm binary at {exe} (build it: cargo build --release)")
    haproxy = find_haproxy()
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0:1]

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(_signum, _frame):
        raise Budget(f"the run took more than --budget {args.budget}s")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    if args.budget:
        signal.alarm(args.budget)

    tmp = tempfile.mkdtemp(prefix="ternlm-fleet-")
    model = ["-m", args.model] if args.model else ["-m", "smollm2-135m"]
    base = [exe, "serve", *model, "--offline", "--host", "127.0.0.1", "--parallel", str(args.parallel), "-c", str(args.ctx), "-t", str(args.threads)]
    base += ["--grace", str(args.grace), "--max-queue", str(args.max_queue)]
    ports = free_ports(args.replicas + 1)
    fleet = [Replica(f"r{i}", ports[i], base, tmp) for i in range(args.replicas)]
    ha = HAProxy(haproxy, tmp, ports[-1], fleet, args)
    check = Check()
    out = {"config": {k: v for k, v in vars(args).items() if k not in ("json",)}, "haproxy": version[0] if version else None}
    out["config"]["replica_command"] = " ".join(base[1:])
    try:
        say(f"{version[0] if version else 'haproxy'}; replicas: {' '.join(base[1:])} on ports {ports[:-1]}; haproxy on {ports[-1]}; logs in {tmp}")
        for r in fleet:
            r.start()
        for r in fleet:
            r.wait_serving(60)
        ha.start()
        up = ha.wait_state([r.name for r in fleet], "UP", 20)
        if up is None:
            raise RuntimeError(f"haproxy does not see every replica up: {ha.states()}")
        say("fleet up: " + ", ".join(f"{n} {s}" for n, s in sorted(ha.states().items())))
        for name in wanted:
            t = now()
            phases[name](args, fleet, ha, check, out)
            say(f"phase {name} took {now() - t:.1f}s")
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 (reported, then cleaned up)
        out["error"] = f"{type(e).__name__}: {e}"
        check(False, f"the run stopped: {out['error']}")
    finally:
        signal.alarm(0)
        for r in fleet:
            r.stop(signal.SIGKILL)
        ha.stop()
        out["runtime_s"] = round(now(), 1)
        out["failed_checks"] = check.failed
        out["ok"] = not check.failed
        if check.failed:
            for r in fleet:
                for path in r.logs:
                    print(f"---- {os.path.basename(path)} (last lines)\n{tail(path)}", end="")
            if os.path.exists(ha.log_path):
                print(f"---- haproxy.log (last lines)\n{tail(ha.log_path, 40)}", end="")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)
        if args.keep:
            print(f"fleet: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"fleet: {'PASS' if not check.failed else 'FAIL'} in {now():.1f}s" + ("" if not check.failed else f": {len(check.failed)} failed checks: " + "; ".join(check.failed)))
    return 0 if not check.failed else 1


if __name__ == "__main__":
    sys.exit(main())
