#!/usr/bin/env python3
"""MCP client peer (PyPI mcp 2.3.0, `mcp.Client`), for the end-to-end tests.

    mcp_client.py --url URL [--mode auto|legacy|2026-07-28]
                  [--transport streamable-http|sse] --script basic|elicit|everything|steps
                  [--answer accept|decline|cancel] [--tool NAME] [--steps JSON]

URL is the endpoint: http://H:P/mcp for streamable HTTP, http://H:P/sse for
the 2024-11-05 SSE transport (--transport sse; use --mode legacy there).

Prints one JSON line per step: {"step": ..., "result": ...}; the first line
is {"step": "connect", "protocol_version": ...}. Exit 0 when every step
succeeded; otherwise the last line is {"step": ..., "error": ...} and the
exit code is 1.

Scripts:
  basic       list_tools; call_tool add {a:2,b:3} (expects 5);
              read_resource config://app; get_prompt greet {name:"ada"}
  elicit      call_tool confirm_delete {item:"report.txt"} (or --tool), answering the
              elicitation with --answer (accept by default) from the elicitation
              callback; in 2026-07-28 mode this is the input_required round trip
  everything  for @modelcontextprotocol/server-everything: list_tools;
              call_tool get-sum {a:1,b:2} (expects 3);
              read_resource demo://resource/static/document/architecture.md;
              get_prompt args-prompt {city:"Paris"}
  steps       the operations in --steps, a JSON list of objects, in order:
              {"op": "list_tools"|"list_resources"|"list_prompts"},
              {"op": "call_tool", "name": N, "args": {...}},
              {"op": "read_resource", "uri": U}, {"op": "get_prompt", "name": N, "args": {...}}.
              Each prints {"step": op, "name"/"uri": ..., "ok": true, ...} (lists: "items",
              the names, or uris; call_tool: "text", "is_error") or, when the server (or
              the mesh) answered with a JSON-RPC error, {"step": op, ..., "ok": false,
              "code": C, "message": M, "data": D}. Such errors do not stop the script;
              anything else does (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitResult


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def dump(result: Any) -> Any:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class StepFailed(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise StepFailed(what)


async def run(args: argparse.Namespace) -> None:
    answers_seen: list[dict[str, Any]] = []

    async def on_elicit(context: Any, params: Any) -> ElicitResult:
        answers_seen.append({"message": getattr(params, "message", None)})
        emit({"step": "elicitation", "message": getattr(params, "message", None), "answer": args.answer})
        if args.answer == "accept":
            return ElicitResult(action="accept", content={"confirm": True})
        return ElicitResult(action=args.answer)

    server: Any = args.url
    if args.transport == "sse":
        server = sse_client(args.url)

    step = "connect"
    try:
        async with Client(
            server,
            mode=args.mode,
            elicitation_callback=on_elicit,
            # Every call goes on the wire (no client-side response cache).
            cache=None,
            read_timeout_seconds=args.timeout,
        ) as client:
            emit({"step": "connect", "protocol_version": client.protocol_version})

            if args.script == "basic":
                step = "list_tools"
                tools = await client.list_tools()
                names = [t.name for t in tools.tools]
                emit({"step": step, "tools": names})
                check("add" in names, f"tool add not listed: {names}")

                step = "call_tool"
                r = await client.call_tool("add", {"a": 2, "b": 3})
                emit({"step": step, "result": dump(r)})
                check(not r.is_error and text_of(r) == "5", f"add(2,3) gave {text_of(r)!r}")

                step = "read_resource"
                r = await client.read_resource("config://app")
                emit({"step": step, "result": dump(r)})
                check(bool(r.contents), "config://app has no contents")

                step = "get_prompt"
                r = await client.get_prompt("greet", {"name": "ada"})
                emit({"step": step, "result": dump(r)})
                check("ada" in json.dumps(dump(r)), "greet prompt lacks the name")

            elif args.script == "elicit":
                step = "call_tool"
                tool = args.tool or "confirm_delete"
                r = await client.call_tool(tool, {"item": "report.txt"})
                emit({"step": step, "tool": tool, "result": dump(r)})
                check(not r.is_error, f"{tool} failed: {text_of(r)}")
                check(bool(answers_seen), "the elicitation callback was never called")
                reply = json.loads(text_of(r))
                check(
                    reply.get("action") == args.answer
                    and reply.get("deleted") == (args.answer == "accept"),
                    f"unexpected reply {reply}",
                )

            elif args.script == "everything":
                step = "list_tools"
                tools = await client.list_tools()
                names = [t.name for t in tools.tools]
                emit({"step": step, "tools": names})
                check("get-sum" in names, f"tool get-sum not listed: {names}")

                step = "call_tool"
                r = await client.call_tool("get-sum", {"a": 1, "b": 2})
                emit({"step": step, "result": dump(r)})
                check(not r.is_error and "3" in text_of(r), f"get-sum(1,2) gave {text_of(r)!r}")

                step = "read_resource"
                r = await client.read_resource("demo://resource/static/document/architecture.md")
                emit({"step": step, "uri": str(r.contents[0].uri) if r.contents else None})
                check(bool(r.contents), "no contents")

                step = "get_prompt"
                r = await client.get_prompt("args-prompt", {"city": "Paris"})
                emit({"step": step, "result": dump(r)})
                check("Paris" in json.dumps(dump(r)), "args-prompt lacks the city")
            elif args.script == "steps":
                for spec in json.loads(args.steps or "[]"):
                    step = spec["op"]
                    await run_step(client, spec)
    except BaseException as e:  # noqa: BLE001 - report anything, incl. exception groups
        if isinstance(e, KeyboardInterrupt):
            raise
        emit({"step": step, "error": describe(e)})
        sys.exit(1)
    emit({"step": "done", "ok": True})


async def run_step(client: Any, spec: dict[str, Any]) -> None:
    op = spec["op"]
    line: dict[str, Any] = {"step": op}
    for key in ("name", "uri"):
        if key in spec:
            line[key] = spec[key]
    try:
        if op == "list_tools":
            r = await client.list_tools()
            line["items"] = [t.name for t in r.tools]
            line["annotations"] = {
                t.name: (t.annotations.model_dump(mode="json", by_alias=True, exclude_none=True) if t.annotations else None)
                for t in r.tools
            }
        elif op == "list_resources":
            r = await client.list_resources()
            line["items"] = [str(x.uri) for x in r.resources]
        elif op == "list_prompts":
            r = await client.list_prompts()
            line["items"] = [x.name for x in r.prompts]
        elif op == "call_tool":
            r = await client.call_tool(spec["name"], spec.get("args", {}))
            line["text"] = text_of(r)
            line["is_error"] = bool(r.is_error)
        elif op == "read_resource":
            r = await client.read_resource(spec["uri"])
            line["contents"] = len(r.contents)
        elif op == "get_prompt":
            r = await client.get_prompt(spec["name"], spec.get("args", {}))
            line["messages"] = len(r.messages)
        else:
            raise StepFailed(f"unknown op {op!r}")
        line["ok"] = True
    except MCPError as e:
        line.update({"ok": False, "code": e.error.code, "message": e.error.message, "data": e.error.data})
    emit(line)


def describe(e: BaseException) -> str:
    """The leaves of an exception group, else the exception itself."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    code = getattr(getattr(e, "error", None), "code", None)
    prefix = f"[{code}] " if code is not None else ""
    return f"{prefix}{type(e).__name__}: {e}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--mode", default="auto", choices=["auto", "legacy", "2026-07-28"])
    p.add_argument("--transport", default="streamable-http", choices=["streamable-http", "sse"])
    p.add_argument("--script", required=True, choices=["basic", "elicit", "everything", "steps"])
    p.add_argument("--steps", help="steps script: a JSON list of operations")
    p.add_argument("--answer", default="accept", choices=["accept", "decline", "cancel"])
    p.add_argument("--tool", help="elicit script: the tool to call (default confirm_delete)")
    p.add_argument("--timeout", type=float, default=20.0, help="read timeout per request, seconds")
    args = p.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
