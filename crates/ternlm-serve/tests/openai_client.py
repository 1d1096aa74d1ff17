"""The official `openai` Python client against a live `ternlm serve` on 127.0.0.1.

Usage: python openai_client.py BASE_URL SERVER_PID

Checks models, chat and text completions (streaming and not), usage counts, stop strings,
log-probabilities and OpenAI-style errors, then a bounded load test: 64 concurrent clients,
some disconnecting mid-stream and some sending garbage, after which the server must still
answer exactly as before and its resident memory must be back near the baseline.
Exits non-zero on the first failed check; prints a summary line per part.
"""

import asyncio
import json
import socket
import sys
import time
import urllib.parse

import openai

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
    (lambda: client.chat.completions.create(model="no-such-model", messages=QUESTION), openai.NotFoundError, "unknown model"),
    (lambda: client.chat.completions.create(model=model, messages=QUESTION, temperature=7), openai.BadRequestError, "temperature out of range"),
    (lambda: client.completions.create(model=model, prompt="word " * 5000, max_tokens=4), openai.BadRequestError, "over-long prompt"),
]:
    try:
        call()
        check(False, f"{what} must fail")
    except err as e:
        check(isinstance(e.body, dict) and "message" in e.body, f"{what}: OpenAI-style error body")
print(f"api: ok (model {model}, chat {text!r})", flush=True)

# ---- bounded load test ----
host, port = urllib.parse.urlparse(BASE).hostname, urllib.parse.urlparse(BASE).port
baseline = rss_mb()
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


results, elapsed = asyncio.run(load())
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
check(after < baseline * 1.5 + 64, f"memory back near the baseline ({baseline:.0f} -> {after:.0f} MB)")
print("openai client: all checks passed", flush=True)
