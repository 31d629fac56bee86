#!/usr/bin/env python3
"""MCP server peer (PyPI mcp 2.3.0, MCPServer), for the end-to-end tests.

    mcp_server.py --host 127.0.0.2 --port 0 --transport streamable-http|sse

Prints `READY <host>:<port>` when listening; runs until killed.
Streamable HTTP at /mcp (2026-07-28 stateless and the 2025-xx session
generations, as the client picks); SSE (2024-11-05) at /sse + /messages/.

Tools: add(a, b), echo(text),
  lookup(key) (annotated readOnlyHint: true), remove(key) (annotated
    readOnlyHint: false, destructiveHint: true): for trust_annotations,
  confirm_delete(item): asks the user through the SDK's resolver mechanism
    (`Resolve` + `Elicit`): a mid-call `elicitation/create` request in the
    handshake modes, an `input_required` result + client retry in 2026-07-28;
  confirm_delete_direct(item): calls `await ctx.elicit(...)` in the tool
    body: works in the handshake modes only (2026-07-28 refuses the
    server-to-client request with -32600).
Resource config://app, prompt greet(name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Annotated

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mcp.server.mcpserver import (  # noqa: E402
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp_types import ToolAnnotations  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from _serve import serve  # noqa: E402

server = MCPServer("mesh-test-mcp", version="1.0.0", log_level="WARNING")


class Confirm(BaseModel):
    confirm: bool = Field(description="Really delete?")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def lookup(key: str) -> str:
    """Look a key up (read-only)."""
    return f"value of {key}"


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
def remove(key: str) -> str:
    """Remove a key (destructive)."""
    return f"removed {key}"


def ask_confirm(item: str) -> Elicit[Confirm]:
    return Elicit(f"Delete {item}?", Confirm)


@server.tool()
def confirm_delete(
    item: str,
    answer: Annotated[ElicitationResult[Confirm], Resolve(ask_confirm)],
) -> str:
    """Delete an item after asking the user (elicitation)."""
    accepted = isinstance(answer, AcceptedElicitation) and answer.data.confirm
    return json.dumps({"item": item, "action": answer.action, "deleted": accepted})


@server.tool()
async def confirm_delete_direct(item: str, ctx: Context) -> str:
    """Delete an item after asking the user with ctx.elicit (handshake modes only)."""
    answer = await ctx.elicit(f"Delete {item}?", Confirm)
    accepted = isinstance(answer, AcceptedElicitation) and answer.data.confirm
    return json.dumps({"item": item, "action": answer.action, "deleted": accepted})


@server.resource("config://app")
def app_config() -> str:
    """The app's configuration."""
    return json.dumps({"name": "mesh-test", "debug": False})


@server.prompt()
def greet(name: str) -> str:
    """Greet someone."""
    return f"Please greet {name} warmly."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True, help="loopback address to listen on")
    p.add_argument("--port", type=int, required=True, help="port (0: any free one)")
    p.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    args = p.parse_args()
    if args.transport == "sse":
        app = server.sse_app(host=args.host)
    else:
        app = server.streamable_http_app(host=args.host)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
