#!/usr/bin/env python3
"""Concurrent LLM calls (PyPI openai 3.57.0, AsyncOpenAI), for the budget end-to-end tests.

    llm_burst.py --base-url http://H:P/v1 [--calls 100] [--stream 0|1]
                 [--message hello] [--max-tokens 16] [--model gpt-4o-mini]

Starts --calls chat completions at once (streamed ones with
stream_options.include_usage) and waits for all of them. max_retries=0: a 429
is seen, not retried.

Prints one JSON line:
  {"calls": N,
   "ok": [{"text": T, "usage": {"prompt_tokens", "completion_tokens", "total_tokens"} or null}, ...],
   "errors": [{"status": S or null, "type": E.type, "code": E.code,
               "body": the response body as JSON (else its text, else null),
               "retry_after": the retry-after header or null,
               "exception": the exception class}, ...]}
and exits 0 (the caller judges the outcomes); exit 1 only when the script
itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import openai

API_KEY = "test-key-not-secret"


def usage_dict(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {
        "prompt_tokens": raw.prompt_tokens,
        "completion_tokens": raw.completion_tokens,
        "total_tokens": raw.total_tokens,
    }


def response_body(response: Any) -> Any:
    if response is None:
        return None
    try:
        return response.json()
    except Exception:  # noqa: BLE001 - not JSON: keep the text for the report
        try:
            return response.text
        except Exception:  # noqa: BLE001 - a body that was never read
            return None


async def one_call(client: openai.AsyncOpenAI, args: argparse.Namespace) -> dict[str, Any]:
    messages = [{"role": "user", "content": args.message}]
    if not args.stream:
        r = await client.chat.completions.create(model=args.model, messages=messages, max_tokens=args.max_tokens)
        return {"text": r.choices[0].message.content or "", "usage": usage_dict(r.usage)}
    text, usage = "", None
    stream = await client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
        if chunk.usage is not None:
            usage = usage_dict(chunk.usage)
    return {"text": text, "usage": usage}


async def guarded(client: openai.AsyncOpenAI, args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    try:
        return True, await one_call(client, args)
    except openai.APIStatusError as e:
        return False, {
            "status": e.status_code,
            "type": e.type,
            "code": e.code,
            "body": response_body(e.response),
            "retry_after": e.response.headers.get("retry-after"),
            "exception": type(e).__name__,
        }
    except openai.APIError as e:
        # Connection errors, a stream that broke mid-way: no status.
        return False, {
            "status": None,
            "type": None,
            "code": None,
            "body": str(e),
            "retry_after": None,
            "exception": type(e).__name__,
        }


async def run(args: argparse.Namespace) -> None:
    async with openai.AsyncOpenAI(
        base_url=args.base_url, api_key=API_KEY, max_retries=0, timeout=args.timeout
    ) as client:
        outcomes = await asyncio.gather(*(guarded(client, args) for _ in range(args.calls)))
    ok = [o for good, o in outcomes if good]
    errors = [o for good, o in outcomes if not good]
    print(json.dumps({"calls": args.calls, "ok": ok, "errors": errors}, sort_keys=True), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--stream", type=int, choices=[0, 1], default=1)
    p.add_argument("--message", default="hello")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    args.stream = bool(args.stream)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
