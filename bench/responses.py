"""Response validation: what an error page costs, and what validation adds to a success.

    .venv/bin/python bench/responses.py

Cases, all in one process:

* a 40 MB HTML error page (title in the head, as nginx, Apache and frameworks
  write them), in memory and streamed through httpx; then the worst case, a
  40 MB page with neither title nor h1, which makes the tokenizer look
  through the whole 64 KiB prefix;
* hostile 40 MB pages made of one construct repeated ("<a ", "</", "<?", a
  lone "<", an unclosed "<title>"): the standard tokenizer's close() would
  re-read an unterminated one in time that grows with the square of the prefix;
* the founding spec's way, for comparison: decode the whole body and search
  it with a regular expression;
* a 2 KB JSON success: ``validate_response`` against plain ``json.loads``
  (targets: 40 MB page < 10 ms and < 1 MB extra memory; 2 KB JSON within 20 us).

Time is the best of several runs; memory is tracemalloc's peak above what
was allocated before the call (the response itself is not counted).
"""

from __future__ import annotations

import gc
import gzip
import json
import logging
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from suture import SimpleResponse, validate_response

logging.getLogger("suture").setLevel(logging.CRITICAL)

MB = 1024 * 1024
ROW = b"<div class='row'><span>lorem ipsum &amp; dolor sit amet</span></div>\n"
HEAD = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>503 Service Unavailable</title>"
    b"<style>body{font-family:sans-serif}</style></head><body><h1>Service Unavailable</h1>"
)


def page(size: int, head: bytes) -> bytes:
    return head + ROW * ((size - len(head)) // len(ROW) + 1)


def best_seconds(fn: Callable[[], Any], *, repeat: int = 15, number: int = 1) -> float:
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, (time.perf_counter() - t0) / number)
    finally:
        gc.enable()
    return best


def peak_bytes(make: Callable[[], Any], run: Callable[[Any], Any]) -> int:
    """tracemalloc peak of ``run(obj)`` above the memory in use before it."""
    obj = make()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        run(obj)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


class LazyStream(httpx.SyncByteStream):
    """A body produced chunk by chunk, as a socket would deliver it."""

    def __init__(self, head: bytes, total: int, chunk: int = 16384) -> None:
        self.head = head
        self.total = total
        self.block = (ROW * (chunk // len(ROW) + 1))[:chunk]
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        self.pulled = len(self.head)
        yield self.head
        while self.pulled < self.total:
            self.pulled += len(self.block)
            yield self.block


def streamed(head: bytes) -> tuple[httpx.Response, LazyStream]:
    stream = LazyStream(head, 40 * MB)
    response = httpx.Response(500, headers={"content-type": "text/html"}, stream=stream)
    return response, stream


TITLE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def founding_spec_way(body: bytes) -> str:
    """Decode everything, then a regular expression (what issue 6 replaces)."""
    text = body.decode("utf-8", errors="replace")
    match = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    return match.group(1) if match else "Unknown error"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.3f} ms"


def fmt_kb(nbytes: int) -> str:
    return f"{nbytes / 1024:9.1f} KiB"


def main() -> None:
    print("suture.validate_response: error pages and JSON successes")
    print()
    big = page(40 * MB, HEAD)
    bare = page(40 * MB, b"<!DOCTYPE html><html><body>")
    print(f"{'case':<52} {'time':>11} {'extra memory':>14}")

    cases: list[tuple[str, Callable[[], Any], Callable[[Any], Any]]] = [
        (
            "40 MB error page, in memory (title)",
            lambda: SimpleResponse(503, {"content-type": "text/html"}, big),
            lambda r: validate_response(r, emit_events=False),
        ),
        (
            "40 MB error page, in memory (no title, no h1)",
            lambda: SimpleResponse(503, {"content-type": "text/html"}, bare),
            lambda r: validate_response(r, emit_events=False),
        ),
        (
            "founding spec: decode all + regex (title)",
            lambda: big,
            founding_spec_way,
        ),
        *(
            (
                f"40 MB hostile page, {unit.decode()!r} repeated",
                lambda unit=unit: SimpleResponse(
                    502, {"content-type": "text/html"}, unit * (40 * MB // len(unit))
                ),
                lambda r: validate_response(r, emit_events=False),
            )
            for unit in (b"<a ", b"</", b"<?", b"<", b"<title>")
        ),
    ]
    results: dict[str, tuple[float, int]] = {}
    for name, make, run in cases:
        obj = make()
        t = best_seconds(lambda run=run, obj=obj: run(obj), repeat=7 if "founding" in name else 15)
        mem = peak_bytes(make, run)
        results[name] = (t, mem)
        print(f"{name:<52} {fmt_ms(t)} {fmt_kb(mem)}")

    for label, head in (("title", HEAD), ("no title, no h1", b"<html><body>")):
        name = f"40 MB error page, streamed by httpx ({label})"

        def run_stream(head: bytes = head) -> int:
            response, stream = streamed(head)
            validate_response(response, emit_events=False)
            return stream.pulled

        t = best_seconds(run_stream)
        pulled = run_stream()
        mem = peak_bytes(lambda head=head: streamed(head)[0], validate_response)
        results[name] = (t, mem)
        print(f"{name:<52} {fmt_ms(t)} {fmt_kb(mem)}   ({pulled // 1024} KiB of 40960 read)")

    zipped = gzip.compress(HEAD + b"\0" * (40 * MB), compresslevel=9)

    def gzipped() -> httpx.Response:
        return httpx.Response(
            503,
            headers={"content-type": "text/html", "content-encoding": "gzip"},
            stream=httpx.ByteStream(zipped),
        )

    name = "40 MB error page, gzip (40 KiB), streamed by httpx"
    t = best_seconds(lambda: validate_response(gzipped(), emit_events=False))
    mem = peak_bytes(gzipped, validate_response)
    print(f"{name:<52} {fmt_ms(t)} {fmt_kb(mem)}   (httpx's own decoding peaks at 87 MB)")

    print()
    small = page(2048, HEAD)
    t_small = best_seconds(
        lambda: validate_response(
            SimpleResponse(502, {"content-type": "text/html"}, small), emit_events=False
        ),
        number=200,
    )
    t_big = results["40 MB error page, in memory (title)"][0]
    print(f"2 KB error page, in memory (title):                  {fmt_ms(t_small)}")
    print(f"40 MB page / 2 KB page time ratio:                   {t_big / t_small:8.2f}x")
    t_spec = results["founding spec: decode all + regex (title)"][0]
    print(f"founding spec / suture on the 40 MB page:            {t_spec / t_big:8.0f}x slower")

    print()
    payload = {
        "items": [
            {"id": i, "name": f"item {i}", "status": "waiting", "priority": i % 3}
            for i in range(30)
        ]
    }
    body = json.dumps(payload).encode()
    body = body[:2048] if len(body) > 2048 else body
    while len(body) < 2048:
        payload["items"].append({"id": 0, "name": "pad", "status": "done", "priority": 0})
        body = json.dumps(payload).encode()
    response = SimpleResponse(200, {"content-type": "application/json"}, body)
    loads_t = best_seconds(lambda: json.loads(body), number=20000, repeat=7)
    validate_t = best_seconds(lambda: validate_response(response), number=20000, repeat=7)
    httpx_resp = httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    httpx_t = best_seconds(lambda: validate_response(httpx_resp), number=20000, repeat=7)
    httpx_json_t = best_seconds(httpx_resp.json, number=20000, repeat=7)
    print(f"{len(body)} B JSON success:")
    print(f"  json.loads(body)                              {loads_t * 1e6:8.2f} us")
    print(
        f"  validate_response(SimpleResponse)             {validate_t * 1e6:8.2f} us"
        f"   (+{(validate_t - loads_t) * 1e6:.2f} us, {validate_t / loads_t:.2f}x)"
    )
    print(f"  httpx.Response.json()                         {httpx_json_t * 1e6:8.2f} us")
    print(
        f"  validate_response(httpx.Response)             {httpx_t * 1e6:8.2f} us"
        f"   (+{(httpx_t - loads_t) * 1e6:.2f} us over json.loads,"
        f" +{(httpx_t - httpx_json_t) * 1e6:.2f} us over httpx .json())"
    )

    print()
    worst_big = max(
        results["40 MB error page, in memory (title)"][0],
        results["40 MB error page, streamed by httpx (title)"][0],
    )
    worst_mem = max(
        results["40 MB error page, in memory (title)"][1],
        results["40 MB error page, streamed by httpx (title)"][1],
    )
    print(
        "targets: 40 MB page < 10 ms: "
        f"{'met' if worst_big < 0.010 else 'MISSED'} ({worst_big * 1e3:.3f} ms); "
        f"< 1 MB extra: {'met' if worst_mem < MB else 'MISSED'} ({worst_mem / 1024:.0f} KiB); "
        f"2 KB JSON within 20 us of json.loads: "
        f"{'met' if validate_t - loads_t < 20e-6 else 'MISSED'} "
        f"(+{(validate_t - loads_t) * 1e6:.2f} us)"
    )


if __name__ == "__main__":
    main()
