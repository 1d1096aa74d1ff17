#!/usr/bin/env python3
"""Concurrency benchmark of a running `ternlm serve` (stdlib only).

For each number of concurrent streams, every client sends one streaming /v1/completions
request with a prompt of exactly --prompt tokens (token ids, so the length is exact) and
--gen generated tokens (no stop), all started together. Reports aggregate generated tokens/s
(all tokens over the wall time from first request to last token) and p50/p99 time to first
token, as a table or JSON lines.

    ternlm serve -m MODEL --parallel 16 --port 8080 &
    python3 benches/serve_bench.py --url http://127.0.0.1:8080 --streams 1,4,8,16
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse


def one(url, prompt, gen, seed, out, start_gate):
    u = urllib.parse.urlparse(url)
    body = json.dumps({"prompt": prompt, "max_tokens": gen, "temperature": 0, "stream": True, "seed": seed})
    start_gate.wait()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out.append({"error": resp.status, "body": resp.read()[:200].decode(errors="replace")})
        return
    first, tokens, last = None, 0, t0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ev.get("choices") and ev["choices"][0].get("finish_reason") is None:
            tokens += 1
            last = time.perf_counter()
            if first is None:
                first = last - t0
    out.append({"ttft": first, "tokens": tokens, "start": t0, "end": last})


def percentile(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    base = None
    if not a.json:
        print(f"| streams | aggregate t/s | per stream t/s | x single | TTFT p50 (s) | TTFT p99 (s) | errors |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(s) for s in a.streams.split(",")]:
        out, gate = [], threading.Event()
        threads = []
        for i in range(n):
            # Distinct prompts (so nothing could be shared between them), exact length.
            prompt = [1000 + (i * 97 + j * 13) % 20000 for j in range(a.prompt)]
            t = threading.Thread(target=one, args=(a.url, prompt, a.gen, i, out, gate))
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
        ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
        p50, p99 = (percentile(ttfts, 50), percentile(ttfts, 99)) if ttfts else (float("nan"),) * 2
        base = base or agg
        row = {"streams": n, "aggregate_tps": agg, "per_stream_tps": agg / n, "vs_single": agg / base if base else 0, "ttft_p50": p50, "ttft_p99": p99, "errors": errors}
        if a.json:
            print(json.dumps(row))
        else:
            print(f"| {n} | {agg:.1f} | {agg / n:.2f} | {row['vs_single']:.2f} | {p50:.3f} | {p99:.3f} | {errors} |")


if __name__ == "__main__":
    main()
