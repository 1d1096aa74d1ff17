#!/usr/bin/env python3
"""Capacity planning on paper: turns `ternlm fit --json` numbers into replicas and cost.

  ternlm fit MODEL --hardware NAME --ctx $((2*PROMPT + OUTPUT)) --json \
    | python3 deploy/capacity.py --users 1000 --prompt 500 --output 200

fit costs a decode token at position ctx/2, so --ctx 2*prompt+output prices the mean
position of a request's answer. The model (deploy/README.md, "Capacity planning"):

  BW = decode_tokens_per_s * bytes_per_token   (fit's effective bandwidth; decode is memory-bound)
  C  = prefill_tokens_per_s * macs_per_token   (fit's effective int8 rate)
  one batched step of B streams:  t(B) = W/BW + B * (kv/BW + (1 + p'/g) * M/C)
    W = weights read per step, kv = a stream's KV cache read per step, M = MACs per token,
    p' = prompt tokens not served from the prompt cache, g = generated tokens;
    each request's prompt is prefilled in the same steps, p'/g prompt tokens per output token.
  B is the most streams whose speed 1/t(B) stays at or above --min-tps (and <= --parallel).
  capacity = B / (g * t(B)) requests/s per replica; plan at --utilization of it.

Memory and compute time are added, not overlapped: on the 2-core Xeon this was checked on,
`ternlm bench -s 1,4,8` measured about 20% more than this predicts at 4 and 8 streams.
"""

import argparse
import json
import math
import sys


def plan(fit, a):
    if fit["decode_bound"] != "memory":
        sys.exit("capacity: decode is not memory-bound on this hardware; the model here assumes it is")
    ctx = fit["ctx"]
    kv_pos = fit["kv_bytes"] / ctx                          # KV cache bytes per position
    bw = fit["decode_tokens_per_s"] * fit["bytes_per_token"] * a.cpu_share
    c = fit["prefill_tokens_per_s"] * fit["macs_per_token"] * a.cpu_share
    m = fit["macs_per_token"]
    w = fit["bytes_per_token"] - kv_pos * ctx / 2           # weights (and head) read per step
    kv = kv_pos * ctx / 2                                   # one stream's KV read per step
    p_new = a.prompt * (1 - a.cache_hit)
    base = w / bw
    per_stream = kv / bw + (1 + p_new / a.output) * m / c
    b_lat = math.floor((1 / a.min_tps - base) / per_stream)
    if b_lat < 1:
        sys.exit(f"capacity: even one stream is slower than {a.min_tps} tokens/s here")
    b = min(b_lat, a.parallel)
    step = base + b * per_stream
    rps = b / (a.output * step)
    # A new prompt arriving while b streams decode: ceil(p'/chunk) steps, each with a chunk.
    chunk_step = base + b * (kv / bw + m / c) + a.prefill_chunk * m / c
    ttft = math.ceil(p_new / a.prefill_chunk) * chunk_step
    plan_rps = a.utilization * rps
    avg = a.users * a.requests_per_user / 86400
    peak = avg * a.peak
    n_peak = max(a.min_replicas, math.ceil(peak / plan_rps))
    n_avg = max(a.min_replicas, math.ceil(avg / plan_rps))
    usd_h = fit.get("usd_per_hour") or 0.0
    mem = fit["weight_bytes"] + a.parallel * a.serve_ctx * kv_pos + fit["runtime_bytes"]
    return {
        "hardware": fit["hardware"],
        "effective_bandwidth_gb_s": bw / 1e9,
        "effective_int8_gmac_s": c / 1e9,
        "weights_read_per_step_gb": w / 1e9,
        "kv_cache_kb_per_position": kv_pos / 1e3,
        "streams_per_replica": b,
        "streams_latency_limit": b_lat,
        "step_ms": step * 1e3,
        "tokens_per_s_per_stream": 1 / step,
        "generated_tokens_per_s_per_replica": b / step,
        "requests_per_s_per_replica": rps,
        "requests_per_s_per_replica_planned": plan_rps,
        "ttft_s_unqueued": ttft,
        "requests_per_s_average": avg,
        "requests_per_s_peak": peak,
        "replicas_peak": n_peak,
        "replicas_average_load": n_avg,
        "usd_per_month_always_peak": n_peak * usd_h * 730,
        "usd_per_month_autoscaled_floor": n_avg * usd_h * 730,
        "usd_per_mtok_generated_planned": usd_h / (plan_rps * a.output * 3600) * 1e6 if usd_h else None,
        "memory_per_replica_gb": mem / 1e9,
        "memory_available_gb": fit["memory_available_bytes"] / 1e9,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=float, required=True, help="daily active users")
    ap.add_argument("--requests-per-user", type=float, default=20, help="requests per user per day")
    ap.add_argument("--prompt", type=float, default=500, help="prompt tokens per request")
    ap.add_argument("--output", type=float, default=200, help="generated tokens per request")
    ap.add_argument("--peak", type=float, default=3, help="peak-hour rate / daily average rate")
    ap.add_argument("--min-tps", type=float, default=5, help="slowest acceptable tokens/s per stream")
    ap.add_argument("--cache-hit", type=float, default=0, help="share of prompt tokens from the prompt cache")
    ap.add_argument("--cpu-share", type=float, default=7 / 8, help="share of the instance ternlm gets (7 of 8 vCPUs)")
    ap.add_argument("--utilization", type=float, default=0.7, help="planned share of capacity (queueing headroom)")
    ap.add_argument("--parallel", type=int, default=8, help="serve --parallel")
    ap.add_argument("--serve-ctx", type=int, default=4096, help="serve --ctx-size, for memory")
    ap.add_argument("--prefill-chunk", type=int, default=64, help="serve --prefill-chunk")
    ap.add_argument("--min-replicas", type=int, default=2)
    ap.add_argument("--hardware", help="pick this entry from fit's list (default: the first)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    fits = json.load(sys.stdin)
    fit = next((f for f in fits if f["hardware"] == a.hardware), None) if a.hardware else fits[0]
    if fit is None:
        sys.exit(f"capacity: {a.hardware} is not in fit's output")
    r = plan(fit, a)
    if a.json:
        print(json.dumps(r, indent=1))
        return
    for k, v in r.items():
        print(f"{k:38} {v:.3g}" if isinstance(v, float) else f"{k:38} {v}")


if __name__ == "__main__":
    main()
