#!/usr/bin/env python3
"""An MCP agent in a tight loop (PyPI mcp 2.3.0, the SDK's Client), for the
budget end-to-end tests: a runaway agent.

    mcp_loop.py --url http://H:P/mcp [--mode auto|legacy|2026-07-28]
                [--tool add] [--args '{"a": 1, "b": 2}'] [--max-calls 1000]

Calls one tool again and again until a call fails (or --max-calls succeeded),
then prints one JSON line
  {"succeeded": N, "failure": null | {"kind": "jsonrpc", "code": C, "message": M, "data": D}
                                    | {"kind": "tool_error", "text": T}
                                    | {"kind": "other", "error": E}}
and exits 0. A failure to connect at all prints {"succeeded": 0, "failure": ...} too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from mcp import Client
from mcp.shared.exceptions import MCPError


def describe(e: BaseException) -> str:
    """The leaves of an exception group, else the exception itself."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


def report(succeeded: int, failure: dict[str, Any] | None) -> None:
    print(json.dumps({"succeeded": succeeded, "failure": failure}, sort_keys=True), flush=True)
    # Leave without closing the session: a mesh that quarantined this agent
    # cuts its traffic, so the session's goodbye (an HTTP DELETE, a stream
    # shutdown) could hang or raise; the report above is all that matters.
    sys.stdout.flush()
    os._exit(0)


async def run(args: argparse.Namespace) -> None:
    tool_args = json.loads(args.args)
    succeeded = 0
    try:
        async with Client(args.url, mode=args.mode, cache=None, read_timeout_seconds=args.timeout) as client:
            while succeeded < args.max_calls:
                try:
                    r = await client.call_tool(args.tool, tool_args)
                except MCPError as e:
                    report(
                        succeeded,
                        {"kind": "jsonrpc", "code": e.error.code, "message": e.error.message, "data": e.error.data},
                    )
                if r.is_error:
                    text = "".join(getattr(c, "text", "") for c in r.content)
                    report(succeeded, {"kind": "tool_error", "text": text})
                succeeded += 1
            report(succeeded, None)
    except BaseException as e:  # noqa: BLE001 - report anything, incl. exception groups
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        report(succeeded, {"kind": "other", "error": describe(e)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--mode", default="auto", choices=["auto", "legacy", "2026-07-28"])
    p.add_argument("--tool", default="add")
    p.add_argument("--args", default='{"a": 1, "b": 2}', help="the tool's arguments, a JSON object")
    p.add_argument("--max-calls", type=int, default=1000, help="stop after this many successes")
    p.add_argument("--timeout", type=float, default=10.0, help="read timeout per request, seconds")
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
