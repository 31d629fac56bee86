"""Shared by the peer servers: run an ASGI app under uvicorn on the given
loopback address and print `READY <host>:<port>` once it listens (with the
real port when 0 was asked for). Runs until killed."""

from __future__ import annotations

import asyncio
import ipaddress
import sys

import uvicorn


def check_loopback(host: str) -> None:
    """The test peers bind only to loopback addresses."""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"refusing to bind to {host!r}: the test peers bind only to loopback IP addresses")


def serve(app, host: str, port: int) -> None:
    check_loopback(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        bound = port
        for s in server.servers:
            for sock in s.sockets:
                bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        print(f"READY {shown}:{bound}", flush=True)

    async def main() -> None:
        task = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(main())
    # uvicorn returns (rather than raising) when it cannot bind.
    if not server.started:
        sys.exit(f"could not listen on {host}:{port}")
