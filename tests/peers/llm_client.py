#!/usr/bin/env python3
"""LLM client peer (PyPI openai 3.57.0 / anthropic 2.14.0), for the end-to-end tests.

    llm_client.py --provider openai|anthropic --base-url URL
                  --api chat|responses|messages --stream 0|1 [--message hello]
                  [--model M] [--max-tokens N]

openai: --base-url http://H:P/v1, --api chat (chat.completions; streaming with
stream_options.include_usage) or responses. anthropic: --base-url http://H:P,
--api messages. max_retries=0, so an error status (e.g. 429) is seen, not retried.

Prints one JSON line {"provider", "api", "stream", "text", "usage"} where
usage is what the client saw, normalised to {"input_tokens", "output_tokens",
"total_tokens"} (plus "raw": the provider's own usage object), or null when
the response carried none. On an API error: {"error", "status"} and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

API_KEY = "test-key-not-secret"


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def as_dict(obj: Any) -> Any:
    if obj is None:
        return None
    return obj.model_dump(mode="json", exclude_none=True)


def usage_of(raw: Any, inp: str, out: str) -> dict[str, Any] | None:
    d = as_dict(raw)
    if d is None:
        return None
    i, o = d.get(inp) or 0, d.get(out) or 0
    return {"input_tokens": i, "output_tokens": o, "total_tokens": d.get("total_tokens", i + o), "raw": d}


def openai_chat(client: Any, args: argparse.Namespace) -> tuple[str, Any]:
    messages = [{"role": "user", "content": args.message}]
    if not args.stream:
        r = client.chat.completions.create(model=args.model, messages=messages, max_tokens=args.max_tokens)
        return r.choices[0].message.content or "", usage_of(r.usage, "prompt_tokens", "completion_tokens")
    text, usage = "", None
    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=args.max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
        if chunk.usage is not None:
            usage = usage_of(chunk.usage, "prompt_tokens", "completion_tokens")
    return text, usage


def openai_responses(client: Any, args: argparse.Namespace) -> tuple[str, Any]:
    if not args.stream:
        r = client.responses.create(model=args.model, input=args.message, max_output_tokens=args.max_tokens)
        return r.output_text, usage_of(r.usage, "input_tokens", "output_tokens")
    text, usage = "", None
    stream = client.responses.create(
        model=args.model, input=args.message, max_output_tokens=args.max_tokens, stream=True
    )
    for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type in ("response.completed", "response.incomplete", "response.failed"):
            usage = usage_of(event.response.usage, "input_tokens", "output_tokens")
    return text, usage


def anthropic_messages(client: Any, args: argparse.Namespace) -> tuple[str, Any]:
    messages = [{"role": "user", "content": args.message}]
    if not args.stream:
        r = client.messages.create(model=args.model, max_tokens=args.max_tokens, messages=messages)
        text = "".join(getattr(b, "text", "") for b in r.content)
        return text, usage_of(r.usage, "input_tokens", "output_tokens")
    text, start, last_delta = "", None, None
    stream = client.messages.create(model=args.model, max_tokens=args.max_tokens, messages=messages, stream=True)
    for event in stream:
        if event.type == "message_start":
            start = as_dict(event.message.usage)
        elif event.type == "content_block_delta" and getattr(event.delta, "type", "") == "text_delta":
            text += event.delta.text
        elif event.type == "message_delta":
            # output_tokens here is cumulative: keep the last one.
            last_delta = as_dict(event.usage)
    if start is None and last_delta is None:
        return text, None
    i = (start or {}).get("input_tokens") or 0
    o = (last_delta or {}).get("output_tokens") or (start or {}).get("output_tokens") or 0
    raw = {"message_start": start, "message_delta": last_delta}
    return text, {"input_tokens": i, "output_tokens": o, "total_tokens": i + o, "raw": raw}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--provider", required=True, choices=["openai", "anthropic"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--api", required=True, choices=["chat", "responses", "messages"])
    p.add_argument("--stream", type=int, choices=[0, 1], default=0)
    p.add_argument("--message", default="hello")
    p.add_argument("--model", default=None)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    args.stream = bool(args.stream)

    if args.provider == "openai":
        import openai

        if args.api not in ("chat", "responses"):
            p.error("--provider openai takes --api chat or responses")
        args.model = args.model or "gpt-4o-mini"
        client = openai.OpenAI(base_url=args.base_url, api_key=API_KEY, max_retries=0, timeout=args.timeout)
        call = openai_chat if args.api == "chat" else openai_responses
        api_error = openai.APIStatusError
        conn_error = openai.APIConnectionError
    else:
        import anthropic

        if args.api != "messages":
            p.error("--provider anthropic takes --api messages")
        args.model = args.model or "claude-haiku-5-5"
        client = anthropic.Anthropic(base_url=args.base_url, api_key=API_KEY, max_retries=0, timeout=args.timeout)
        call = anthropic_messages
        api_error = anthropic.APIStatusError
        conn_error = anthropic.APIConnectionError

    try:
        text, usage = call(client, args)
    except api_error as e:
        emit({"error": str(e), "status": e.status_code})
        sys.exit(1)
    except conn_error as e:
        emit({"error": f"{type(e).__name__}: {e}", "status": None})
        sys.exit(1)
    emit({"provider": args.provider, "api": args.api, "stream": args.stream, "text": text, "usage": usage})


if __name__ == "__main__":
    main()
