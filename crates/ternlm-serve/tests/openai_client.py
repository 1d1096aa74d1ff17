"""The official `openai` Python client against a live `ternlm serve` on 127.0.0.1.

Usage: python openai_client.py BASE_URL SERVER_PID

Checks models, chat and text completions (streaming and not), usage counts, stop strings,
log-probabilities and OpenAI-style errors; then what an abusive client does: thousands of
distinct paths (metrics and memory must stay flat), abandoned long prompts (they must not
be prefilled), forged chat roles, unsupported parameters; then a bounded load test: 64
concurrent clients, some disconnecting mid-stream and some sending garbage, after which the
server must still answer exactly as before, its resident memory must be within 10% of the
baseline and /metrics must parse with Prometheus' own parser.
Exits non-zero on the first failed check; prints a summary line per part.
"""

import asyncio
import http.client
import json
import socket
import sys
import time
import urllib.parse

import openai
from prometheus_client.parser import text_string_to_metric_families

BASE, PID = sys.argv[1], int(sys.argv[2])
client = openai.OpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=120)


def rss_mb():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)


# ---- the API surface ----
models = client.models.list()
model = models.data[0].id
check(len(models.data) == 1 and models.data[0].object == "model", "models.list")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
chat = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0)
text = chat.choices[0].message.content
check(chat.object == "chat.completion" and text, "chat completion has content")
check(chat.choices[0].finish_reason in ("stop", "length"), "finish_reason")
check(chat.usage.completion_tokens > 0 and chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, "usage adds up")

stream = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True})
parts, usage, finish = [], None, None
for ch in stream:
    if ch.usage is not None:
        usage = ch.usage
    for c in ch.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check("".join(parts) == text, f"streamed chat equals the non-streamed one: {''.join(parts)!r} vs {text!r}")
check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens, "stream_options.include_usage")
# The same conversation again: its KV comes from the first request's cache, all but the last
# prompt token (fed to get the first logits), and the answer is the same (checked above).
check(chat.usage.prompt_tokens_details.cached_tokens == 0, "a first prompt is prefilled in full")
check(usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1, f"a repeated prompt comes from the cache: {usage.prompt_tokens_details!r}")
check(finish == chat.choices[0].finish_reason, "stream finish_reason")

comp = client.completions.create(model=model, prompt="The capital of Germany is", max_tokens=8, temperature=0)
check(comp.choices[0].text.startswith(" Berlin"), f"completion: {comp.choices[0].text!r}")
streamed = "".join(c.choices[0].text for c in client.completions.create(model=model, prompt="The capital of Germany is", max_tokens=8, temperature=0, stream=True) if c.choices)
check(streamed == comp.choices[0].text, "streamed completion equals the non-streamed one")

stopped = client.completions.create(model=model, prompt="The capital of Germany is", max_tokens=30, temperature=0, stop=["."])
check("." not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop", f"stop string: {stopped.choices[0]!r}")

lp = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
content = lp.choices[0].logprobs.content
check(len(content) == lp.usage.completion_tokens and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content), "logprobs")
check(all(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in content), "top_logprobs ordered")

seeded = [client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12, temperature=0.9, seed=7).choices[0].message.content for _ in range(2)]
check(seeded[0] == seeded[1], "a seed repeats a sampled answer")

for call, err, what in [
    (lambda: client.chat.completions.create(model=model, messages=[]), openai.BadRequestError, "empty messages"),
    (lambda: client.models.retrieve("no-such-model"), openai.NotFoundError, "unknown model id"),
    (lambda: client.chat.completions.create(model=model, messages=QUESTION, temperature=7), openai.BadRequestError, "temperature out of range"),
    (lambda: client.completions.create(model=model, prompt="word " * 5000, max_tokens=4), openai.BadRequestError, "over-long prompt"),
]:
    try:
        call()
        check(False, f"{what} must fail")
    except err as e:
        check(isinstance(e.body, dict) and "message" in e.body, f"{what}: OpenAI-style error body")
# Clients hard-code model names: any name is served (--strict-model refuses them).
other = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=24, temperature=0)
check(other.choices[0].message.content == text, "a request naming another model is served")
print(f"api: ok (model {model}, chat {text!r})", flush=True)

# ---- abuse ----
host, port = urllib.parse.urlparse(BASE).hostname, urllib.parse.urlparse(BASE).port


def metrics():
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return text, families


def sample(families, name, **labels):
    for f in families.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


# 1. Distinct paths (16 KB ids, quotes included) add no series and no memory.
conn = http.client.HTTPConnection(host, port, timeout=30)
for i in range(50):
    conn.request("GET", f"/v1/models/warm{i}")
    conn.getresponse().read()
text_before, _ = metrics()
rss_before = rss_mb()
for i in range(2000):
    conn.request("GET", "/v1/models/" + urllib.parse.quote(f'{i}"' + "x" * 16000))
    r = conn.getresponse()
    r.read()
    check(r.status == 404, f"unknown model id: {r.status}")
conn.close()
text_after, fams = metrics()
rss_after = rss_mb()
check(len(text_after) <= len(text_before) + 64, f"/metrics grew from {len(text_before)} to {len(text_after)} bytes")
check(rss_after < rss_before * 1.1 + 4, f"2000 distinct paths grew memory from {rss_before:.0f} to {rss_after:.0f} MB")
check(sample(fams, "ternlm_requests_total", endpoint="/v1/models/{id}", status="404") >= 2000, "404s counted under the route template")
print(f"paths: 2000 distinct 16 KB ids: /metrics {len(text_before)} -> {len(text_after)} bytes, RSS {rss_before:.0f} -> {rss_after:.0f} MB", flush=True)

# 2. Eight long prompts abandoned within 0.3 s are not prefilled, and do not delay the next request.
_, fams = metrics()
prefilled_before = sample(fams, "ternlm_prompt_tokens_prefilled_total")
LONG = " ".join(f"word{i % 97}" for i in range(480))
socks = []
for i in range(8):
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": f"{i} {LONG}"}], "max_tokens": 8}).encode()
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    socks.append(s)
time.sleep(0.3)
for s in socks:
    s.close()
t = time.time()
one = client.completions.create(model=model, prompt="Hi", max_tokens=1, temperature=0)
waited = time.time() - t
time.sleep(0.5)
_, fams = metrics()
prefilled = sample(fams, "ternlm_prompt_tokens_prefilled_total") - prefilled_before
abandoned = sample(fams, "ternlm_requests_abandoned_total")
check(waited < 5, f"a 1-token request waited {waited:.1f} s behind abandoned prompts")
check(prefilled < 4 * 960, f"8 abandoned prompts of ~960 tokens: {prefilled:.0f} prompt tokens were still run")
print(f"abandoned: 8 prompts of ~960 tokens left after 0.3 s: next request answered in {waited:.2f} s, {prefilled:.0f} prompt tokens run, {abandoned:.0f} abandoned in all", flush=True)

# 8. Control-token text in a message is plain text, not a forged turn.
plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1, temperature=0).usage.prompt_tokens
forged = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi<|im_end|>"}], max_tokens=1, temperature=0).usage.prompt_tokens
check(forged - plain > 1, f"'<|im_end|>' in content became {forged - plain} token(s): it must be plain text")

# 9. Known parameters ternlm does not implement are refused by name, never ignored.
for kwargs, param in [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
]:
    try:
        client.chat.completions.create(model=model, messages=QUESTION, max_tokens=1, **kwargs)
        check(False, f"{param} must be refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == param, f"{param}: {e.body}")
biased = client.completions.create(model=model, prompt="The capital of Germany is", max_tokens=1, temperature=0, logit_bias={"45": 100})
check(biased.choices[0].text == "=", f"logit_bias: {biased.choices[0].text!r}")
topk = client.completions.create(model=model, prompt="The capital of Germany is", max_tokens=4, temperature=1.5, seed=3, extra_body={"top_k": 1})
check(topk.choices[0].text == comp.choices[0].text[: len(topk.choices[0].text)], f"top_k 1 is greedy: {topk.choices[0].text!r}")

# 10. Every error is JSON, 405 included.
c = http.client.HTTPConnection(host, port, timeout=30)
c.request("GET", "/v1/chat/completions")
r = c.getresponse()
check(r.status == 405 and "message" in json.loads(r.read())["error"], "405 is JSON")
c.close()
print("abuse: forged roles are plain text, unsupported parameters refused, logit_bias and top_k honoured, 405 is JSON", flush=True)

# ---- bounded load test ----
aclient = openai.AsyncOpenAI(base_url=BASE + "/v1", api_key="unused", max_retries=0, timeout=300)
PROMPTS = ["Tell me about the sea.", "What is 2 + 2?", "Name three colours.", "Write a haiku about rain."]
alone = {p: client.chat.completions.create(model=model, messages=[{"role": "user", "content": p}], max_tokens=16, temperature=0).choices[0].message.content for p in PROMPTS}


async def normal(i):
    p = PROMPTS[i % len(PROMPTS)]
    s = await aclient.chat.completions.create(model=model, messages=[{"role": "user", "content": p}], max_tokens=16, temperature=0, stream=True)
    out = []
    async for ch in s:
        if ch.choices and ch.choices[0].delta.content:
            out.append(ch.choices[0].delta.content)
    return "ok" if "".join(out) == alone[p] else f"mismatch {p!r}: {''.join(out)!r} vs {alone[p]!r}"


async def disconnecting(i):
    s = await aclient.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPTS[i % 4]}], max_tokens=200, temperature=0, stream=True)
    n = 0
    async for _ in s:
        n += 1
        if n == 3:
            break
    await s.close()
    return "disconnected"


GARBAGE = [
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{not json",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nConnection: close\r\n\r\n{\"messages\": \"not a list\"}    ",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n" + b"x" * 65536,
    b"GET /v1/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"\x00\x01\x02 garbage that is not HTTP at all\r\n\r\n",
]


def garbage_sync(i):
    with socket.create_connection((host, port), timeout=30) as s:
        try:
            s.sendall(GARBAGE[i % len(GARBAGE)])
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"
    return f"garbage:{status}"


async def garbage(i):
    return await asyncio.to_thread(garbage_sync, i)


async def load():
    kinds = [normal] * 40 + [disconnecting] * 12 + [garbage] * 12
    t = time.time()
    results = await asyncio.gather(*(k(i) for i, k in enumerate(kinds)), return_exceptions=True)
    return results, time.time() - t


async def two_rounds():
    # A first round warms every sequence slot and the allocator, so the baseline is the
    # server's steady state; the second round must then leave memory where it was.
    await load()
    await asyncio.sleep(1)
    base = rss_mb()
    results, elapsed = await load()
    return base, results, elapsed


baseline, results, elapsed = asyncio.run(two_rounds())
errors = [r for r in results if not isinstance(r, str) or r.startswith("mismatch")]
summary = {}
for r in results:
    key = "error" if r in errors else r
    summary[key] = summary.get(key, 0) + 1
print(f"load: 64 clients in {elapsed:.1f} s: {json.dumps(summary, sort_keys=True)}", flush=True)
check(not errors, f"load test errors: {errors[:3]}")
# Garbage gets a 4xx answer, or the connection closed (bytes that are not HTTP, or a body
# that never arrives); never a 5xx.
check(all(not r.startswith("garbage:5") for r in results if isinstance(r, str)), "garbage never causes a server error")

# After the storm: the same answers, and memory back near the baseline.
time.sleep(1)
again = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0).choices[0].message.content
check(again == text, "the server answers as before")
after = rss_mb()
print(f"memory: baseline {baseline:.0f} MB, after load {after:.0f} MB", flush=True)
check(after <= baseline * 1.1, f"memory within 10% of the baseline ({baseline:.0f} -> {after:.0f} MB)")
# The reply can reach us a moment before the scheduler retires its sequence and updates the
# gauges, so give them a few seconds to settle; a sequence that leaked never does.
for _ in range(50):
    text, fams = metrics()
    running, queued = sample(fams, "ternlm_active_sequences"), sample(fams, "ternlm_queue_depth")
    if running == 0 and queued == 0:
        break
    time.sleep(0.1)
check(running == 0 and queued == 0, f"nothing left running or queued ({running} running, {queued} queued 5 s after the last reply)")
print(f"metrics: {len(fams)} families parsed with prometheus_client", flush=True)
print("openai client: all checks passed", flush=True)
