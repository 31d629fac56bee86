#!/usr/bin/env python3
"""LLM calls in a loop from several concurrent workers (PyPI openai 3.57.0,
AsyncOpenAI), for the budget end-to-end tests (a daemon killed under load).

    llm_loop.py --base-url http://H:P/v1 [--workers 4] [--stream 0|1|mixed]
                [--message hello] [--max-tokens 16] [--max-calls 2000]

Each worker calls chat completions one after the other until a call fails
(e.g. the mesh is gone) or it made --max-calls. max_retries=0. Streamed calls
ask for stream_options.include_usage; with --stream mixed, odd-numbered
workers stream and even-numbered ones do not.

Prints one JSON line per call a worker saw complete, as soon as it did:
  {"completed": W, "total_tokens": T or null}
and at the end one line
  {"done": true, "completed": C, "failures": [{"worker": W, "error": E}, ...]}.
Exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import openai

API_KEY = "test-key-not-secret"


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


async def one_call(client: openai.AsyncOpenAI, args: argparse.Namespace, stream: bool) -> int | None:
    """The call's total tokens as the client saw them (None: no usage)."""
    messages = [{"role": "user", "content": args.message}]
    if not stream:
        r = await client.chat.completions.create(model=args.model, messages=messages, max_tokens=args.max_tokens)
        return r.usage.total_tokens if r.usage is not None else None
    total = None
    chunks = await client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in chunks:
        if chunk.usage is not None:
            total = chunk.usage.total_tokens
    return total


async def worker(
    index: int, client: openai.AsyncOpenAI, args: argparse.Namespace, failures: list[dict[str, Any]]
) -> int:
    completed = 0
    stream = args.stream == "1" or (args.stream == "mixed" and index % 2 == 1)
    while completed < args.max_calls:
        try:
            total = await one_call(client, args, stream)
        except openai.APIError as e:
            failures.append({"worker": index, "error": f"{type(e).__name__}: {e}"})
            return completed
        completed += 1
        emit({"completed": index, "total_tokens": total})
    return completed


async def run(args: argparse.Namespace) -> None:
    failures: list[dict[str, Any]] = []
    # One client per worker: one connection each, so a worker has at most
    # one call in flight on the wire.
    clients = [
        openai.AsyncOpenAI(base_url=args.base_url, api_key=API_KEY, max_retries=0, timeout=args.timeout)
        for _ in range(args.workers)
    ]
    try:
        counts = await asyncio.gather(*(worker(i, c, args, failures) for i, c in enumerate(clients)))
    finally:
        for c in clients:
            await c.close()
    emit({"done": True, "completed": sum(counts), "failures": failures})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--stream", choices=["0", "1", "mixed"], default="0")
    p.add_argument("--message", default="hello")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-calls", type=int, default=2000, help="per worker: the loop ends even if nothing fails")
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
