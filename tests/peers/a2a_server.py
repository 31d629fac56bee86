#!/usr/bin/env python3
"""A2A echo agent (PyPI a2a-sdk 1.3.0), for the end-to-end tests.

    a2a_server.py --host 127.0.0.3 --port 0

Prints `READY <host>:<port>` when listening; runs until killed.
Agent card at /.well-known/agent-card.json; JSON-RPC at / (A2A 1.0, and 0.3
through the SDK's v0.3 compatibility layer).

A message whose text starts with "stream:" runs as a task: Task, status
WORKING, an artifact with the echoed text, status COMPLETED (4 events on
SendStreamingMessage; the final Task on SendMessage). Any other text is
answered with one agent Message carrying the same text.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from a2a.helpers.proto_helpers import (  # noqa: E402
    new_task_from_user_message,
    new_text_message,
    new_text_part,
)
from a2a.server.agent_execution import AgentExecutor, RequestContext  # noqa: E402
from a2a.server.events import EventQueue  # noqa: E402
from a2a.server.request_handlers import DefaultRequestHandler  # noqa: E402
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes  # noqa: E402
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater  # noqa: E402
from a2a.types import (  # noqa: E402
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
)
from starlette.applications import Starlette  # noqa: E402

from _serve import check_loopback, serve  # noqa: E402

STREAM_PREFIX = "stream:"


class EchoExecutor(AgentExecutor):
    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if not text.startswith(STREAM_PREFIX):
            await event_queue.enqueue_event(
                new_text_message(text, context_id=context.context_id, task_id=context.task_id)
            )
            return
        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work(
            new_text_message("echoing", context_id=task.context_id, task_id=task.id)
        )
        await updater.add_artifact([new_text_part(text)], name="echo", last_chunk=True)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError("the echo agent does not cancel")


def agent_card(url: str) -> AgentCard:
    return AgentCard(
        name="mesh-test-echo",
        description="Echoes the text it receives (mesh end-to-end tests).",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="0.3"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo",
                name="Echo",
                description="Replies with the text it got; 'stream:' text runs as a streamed task.",
                tags=["echo"],
            )
        ],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True, help="loopback address to listen on")
    p.add_argument("--port", type=int, required=True, help="port (0: any free one)")
    args = p.parse_args()
    check_loopback(args.host)
    if args.port == 0:
        # The card names the URL, so the port must be known before serving.
        import socket

        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
            s.bind((args.host, 0))
            args.port = s.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    card = agent_card(f"http://{host}:{args.port}/")
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )
    routes = create_agent_card_routes(card) + create_jsonrpc_routes(
        handler, "/", enable_v0_3_compat=True
    )
    serve(Starlette(routes=routes), args.host, args.port)


if __name__ == "__main__":
    main()
