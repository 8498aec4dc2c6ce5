#!/usr/bin/env python3
"""Burst from zero (bench only): N requests at once to one nimbus function, each on its own
connection, all connected first and then sent together. Prints one JSON object: how many were
answered 200 without X-Nimbus-Function-Error, the others, the time from the first send until
the last answer, and latency percentiles.

usage: burst.py BASE_URL TOKEN FUNCTION N
"""
import asyncio
import json
import sys
import time
import urllib.parse


async def one(host, port, path, token, gate, out):
    body = b'{"name":"ada"}'
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as e:
        out.append(("connect: " + str(e), 0.0))
        return
    await gate.wait()
    t0 = time.monotonic()
    try:
        writer.write(req)
        await writer.drain()
        data = await reader.read()
    except OSError as e:
        out.append(("io: " + str(e), time.monotonic() - t0))
        return
    finally:
        writer.close()
    dt = time.monotonic() - t0
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    status = head.split(" ", 2)[1] if " " in head else "?"
    if status == "200" and "x-nimbus-function-error" not in head:
        out.append(("ok", dt))
    else:
        out.append((f"status {status}", dt))


async def main():
    base, token, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    u = urllib.parse.urlparse(base)
    path = f"/v1/functions/{name}/invoke"
    gate = asyncio.Event()
    out = []
    tasks = [asyncio.create_task(one(u.hostname, u.port, path, token, gate, out)) for _ in range(n)]
    await asyncio.sleep(0.5)  # every connection opened
    t0 = time.monotonic()
    gate.set()
    await asyncio.gather(*tasks)
    total = time.monotonic() - t0
    lat = sorted(dt for _, dt in out)
    errors = {}
    for what, _ in out:
        if what != "ok":
            errors[what] = errors.get(what, 0) + 1
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None
    print(json.dumps({"n": n, "ok": sum(1 for w, _ in out if w == "ok"), "errors": errors,
                      "seconds": round(total, 3), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                      "max_ms": round(lat[-1] * 1000, 1) if lat else None}))


asyncio.run(main())
