#!/usr/bin/env python3
"""A2A client peer (PyPI a2a-sdk 1.3.0 official client), for the end-to-end tests.

    a2a_client.py --url http://H:P/ --script send|stream [--text TEXT]
                  [--protocol 1.0|0.3] [--trace]

Fetches the agent card from URL/.well-known/agent-card.json, then sends one
message: `send` = SendMessage (non-streaming), `stream` = SendStreamingMessage
(text prefixed with "stream:" so the echo agent streams a task).
--protocol 0.3 talks through the SDK's v0.3 transport (message/send,
message/stream) instead of 1.0.

Prints one JSON line per response event ({"event": ...}), then
{"ok": true, "events": N, "text": <echoed text>}. On failure the last line is
{"error": ...} and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

import httpx
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import AgentInterface, Message, Part, Role, SendMessageRequest
from google.protobuf.json_format import MessageToDict


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def texts(d: Any) -> list[str]:
    """Every "text" string in a JSON-ish value."""
    out: list[str] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k == "text" and isinstance(v, str):
                out.append(v)
            else:
                out.extend(texts(v))
    elif isinstance(d, list):
        for v in d:
            out.extend(texts(v))
    return out


async def trace(request: httpx.Request) -> None:
    """--trace: one stderr line per HTTP request (path, A2A-Version, JSON-RPC method)."""
    method = None
    try:
        method = json.loads(request.content).get("method")
    except (ValueError, AttributeError, httpx.RequestNotRead):
        pass
    line = {
        "request": request.method,
        "path": request.url.path,
        "a2a_version": request.headers.get("a2a-version"),
        "rpc": method,
    }
    print(json.dumps(line, sort_keys=True), file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> None:
    text = args.text
    if args.script == "stream" and not text.startswith("stream:"):
        text = "stream:" + text
    hooks = {"request": [trace]} if args.trace else {}
    async with httpx.AsyncClient(timeout=args.timeout, event_hooks=hooks) as http:
        card = await A2ACardResolver(http, args.url).get_agent_card()
        if args.protocol == "0.3":
            urls = [i.url for i in card.supported_interfaces] or [args.url]
            del card.supported_interfaces[:]
            card.supported_interfaces.append(
                AgentInterface(url=urls[0], protocol_binding="JSONRPC", protocol_version="0.3")
            )
        config = ClientConfig(streaming=args.script == "stream", httpx_client=http)
        client = ClientFactory(config).create(card)
        request = SendMessageRequest(
            message=Message(
                role=Role.ROLE_USER,
                message_id=str(uuid.uuid4()),
                parts=[Part(text=text)],
            )
        )
        events = 0
        seen: list[str] = []
        async for event in client.send_message(request):
            d = MessageToDict(event)
            events += 1
            seen.extend(texts(d))
            emit({"event": d})
    if text not in seen:
        raise RuntimeError(f"the reply does not echo {text!r}: saw {seen}")
    if args.script == "stream" and events < 2:
        raise RuntimeError(f"expected 2+ streamed events, got {events}")
    emit({"ok": True, "events": events, "text": text})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the agent's base URL, e.g. http://127.0.0.3:8000/")
    p.add_argument("--script", required=True, choices=["send", "stream"])
    p.add_argument("--text", default="hello")
    p.add_argument("--protocol", default="1.0", choices=["1.0", "0.3"])
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--trace", action="store_true", help="print each HTTP request on stderr")
    args = p.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as e:  # noqa: BLE001
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)


if __name__ == "__main__":
    main()
