#!/usr/bin/env python3
"""Concurrency benchmark of a running `ternlm serve` (stdlib only).

For each number of concurrent streams, every client sends --requests streaming
/v1/completions requests one after another (a closed loop, as an editor or agent does), each
with a prompt of exactly --prompt tokens (token ids, so the length is exact) and about --gen
generated tokens (no stop); all clients start together. Each request's length is drawn
(seeded, so runs repeat) from --gen x [1 - spread, 1 + spread] with --gen-spread (default
0.5): clients of one fixed length stay in lockstep, all ending on the same step and all
sending their next prompt at once, which makes every round a burst; real traffic does not
do that. --gen-spread 0 restores fixed lengths. Reported, as a table or JSON lines:

- aggregate t/s: all generated tokens over the wall time from first request to last token
  (prompt processing included);
- decode t/s: the sum over concurrent streams of each request's rate after its first token
  (tokens - 1 over first-to-last token time), averaged over the requests: what the batched
  decode steps deliver while streams are generating;
- TTFT p50/p99 in steady state: every request but each client's first. The first round is a
  burst of simultaneous prompts (on a compute-bound CPU the k-th of them waits for k
  prefills); its p99 is reported separately as "cold p99".

    ternlm serve -m MODEL --parallel 16 --port 8080 &
    python3 benches/serve_bench.py --url http://127.0.0.1:8080 --streams 1,4,8,16
"""

import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.parse


def client(url, prompts, gens, seed, out, start_gate):
    start_gate.wait()
    for k, (prompt, gen) in enumerate(zip(prompts, gens)):
        one(url, prompt, gen, seed, k, out)


def one(url, prompt, gen, seed, round_, out):
    u = urllib.parse.urlparse(url)
    body = json.dumps({"prompt": prompt, "max_tokens": gen, "temperature": 0, "stream": True, "seed": seed})
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out.append({"error": resp.status, "body": resp.read()[:200].decode(errors="replace")})
        return
    first, tokens, last, first_at = None, 0, t0, None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ev.get("choices") and ev["choices"][0].get("finish_reason") is None:
            tokens += 1
            last = time.perf_counter()
            if first is None:
                first, first_at = last - t0, last
    rate = (tokens - 1) / (last - first_at) if tokens > 1 and last > first_at else None
    out.append({"ttft": first, "tokens": tokens, "start": t0, "end": last, "round": round_, "decode_rate": rate})


def percentile(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--gen-spread", type=float, default=0.5, help="generated lengths vary by this fraction of --gen")
    ap.add_argument("--requests", type=int, default=3, help="requests each client sends in turn")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    base = None
    if not a.json:
        print("| streams | aggregate t/s | x single | decode t/s | x single | TTFT p50 (s) | TTFT p99 (s) | x single | cold p99 (s) | errors |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(s) for s in a.streams.split(",")]:
        out, gate = [], threading.Event()
        threads = []
        for i in range(n):
            # A distinct prompt for every request, down to its first token, so no request
            # finds its prompt in a cache the server kept (--no-cache-prompt is not needed).
            prompts = [[1000 + (i * 97 + k * 7919 + j * 13) % 20000 for j in range(a.prompt)] for k in range(a.requests)]
            rng = random.Random(n * 1000 + i)
            gens = [max(1, round(a.gen * (1 + a.gen_spread * rng.uniform(-1, 1)))) for _ in range(a.requests)]
            t = threading.Thread(target=client, args=(a.url, prompts, gens, i, out, gate))
            t.start()
            threads.append(t)
        gate.set()
        for t in threads:
            t.join()
        ok = [r for r in out if "error" not in r]
        errors = len(out) - len(ok)
        tokens = sum(r["tokens"] for r in ok)
        wall = max(r["end"] for r in ok) - min(r["start"] for r in ok) if ok else float("nan")
        agg = tokens / wall if ok else 0.0
        steady = [r for r in ok if r["round"] > 0] or ok
        ttfts = [r["ttft"] for r in steady if r["ttft"] is not None]
        cold = [r["ttft"] for r in ok if r["round"] == 0 and r["ttft"] is not None]
        p50, p99 = (percentile(ttfts, 50), percentile(ttfts, 99)) if ttfts else (float("nan"),) * 2
        cold99 = percentile(cold, 99) if cold else float("nan")
        rates = [r["decode_rate"] for r in ok if r["decode_rate"]]
        decode = n * statistics.mean(rates) if rates else 0.0
        if base is None:
            base = (agg, decode, p99)
        row = {
            "streams": n,
            "requests": len(out),
            "aggregate_tps": agg,
            "vs_single": agg / base[0] if base[0] else 0,
            "decode_tps": decode,
            "decode_vs_single": decode / base[1] if base[1] else 0,
            "ttft_p50": p50,
            "ttft_p99": p99,
            "ttft_p99_vs_single": p99 / base[2] if base[2] else 0,
            "ttft_cold_p99": cold99,
            "errors": errors,
        }
        if a.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"| {n} | {agg:.1f} | {row['vs_single']:.2f} | {decode:.1f} | {row['decode_vs_single']:.2f} | {p50:.2f} | {p99:.2f} | {row['ttft_p99_vs_single']:.2f} | {cold99:.2f} | {errors} |",
                flush=True,
            )

if __name__ == "__main__":
    main()
