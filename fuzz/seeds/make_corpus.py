#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ in each target's input
layout (see the doc comment of fuzz/fuzz_targets/<target>.rs). Shapes follow
captured traffic (shared PROTOCOLS.md). Re-run after changing a layout:
    python3 fuzz/seeds/make_corpus.py
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def j(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def sse(events):
    out = b""
    for ev in events:
        if isinstance(ev, bytes):
            out += ev
            continue
        name, data = ev
        if name:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + (data if isinstance(data, bytes) else j(data)) + b"\n\n"
    return out


# --- LLM response shapes -----------------------------------------------------
chat_json = j({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"},
                            "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                         "prompt_tokens_details": {"cached_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 0}}})
chat_sse = sse([
    (None, {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None}),
    (None, {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hel"}}], "usage": None}),
    (None, {"id": "c1", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}}], "usage": None}),
    (None, {"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
    (None, b"[DONE]"),
])
chat_sse_cut = chat_sse[: len(chat_sse) // 2]
responses_json = j({"id": "resp_1", "object": "response", "status": "completed",
                    "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hi!"}]},
                               {"type": "function_call", "arguments": "{\"x\":2}"}],
                    "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4},
                              "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
                              "total_tokens": 27}})
responses_sse = sse([
    ("response.created", {"type": "response.created", "response": {"id": "resp_1", "usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi"}),
    ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta", "delta": "{}"}),
    ("response.completed", {"type": "response.completed", "response": {"id": "resp_1", "usage": {
        "input_tokens": 20, "output_tokens": 7, "total_tokens": 27}}}),
])
messages_json = j({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                   "content": [{"type": "text", "text": "Hello!"}, {"type": "thinking", "thinking": "hmm"}],
                   "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2,
                             "cache_creation_input_tokens": 1}})
messages_sse = sse([
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "content": [], "usage": {
        "input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 0}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}),
    ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 6}}),
    ("message_stop", {"type": "message_stop"}),
])
error_json = j({"error": {"type": "invalid_request_error", "message": "bad"}})

# --- sse: header, 2 bytes of cut offset (1 cut), the stream --------------------
mcp_sse = sse([
    b"id: prime-1\nretry: 3000\ndata:\n\n",
    ("message", {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 0.5}}),
    (None, {"jsonrpc": "2.0", "id": 0, "method": "elicitation/create", "params": {"message": "name?"}}),
    ("message", {"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "5"}], "isError": False}}),
])
legacy_endpoint = b"event: endpoint\r\ndata: /messages/?session_id=9f1c2b\r\n\r\n: keep-alive\r\n\r\n"
a2a_sse = sse([(None, {"jsonrpc": "2.0", "id": "r1", "result": {"kind": "status-update", "taskId": "t1",
                                                              "status": {"state": "working"}, "final": False}})])
streams = {
    "mcp": mcp_sse, "legacy_endpoint": legacy_endpoint, "a2a": a2a_sse, "chat": chat_sse,
    "responses": responses_sse, "messages": messages_sse,
    "bom_cr": b"\xef\xbb\xbfdata: a\rdata: b\r\rid\r\n:comment\ndata\n\n",
    "multiline": b"event: x\ndata: line1\ndata: line2\nid: 7\nretry: 10\n\ndata: tail-without-end",
    "utf8": "data: caf\u00e9 \u2603 \U0001F600\n\n".encode(),
}
for name, stream in streams.items():
    for header, cut in [(0x03, len(stream) // 2), (0x07, 1), (0x13, 0), (0x01, 5)]:
        hdr = bytes([header])
        cuts = ((header >> 2) & 3) + 1
        offsets = b"".join(struct.pack("<H", (cut + 3 * i) % 65536) for i in range(cuts))
        write("sse", f"{name}-{header:02x}", hdr + offsets + stream)

# --- llm_usage: header (api | sse << 2 | chunking << 3), the body --------------
CHAT, RESP, MSG, GATEWAY = 0, 1, 2, 3
llm = {
    "chat-json": (CHAT, chat_json), "chat-sse": (CHAT | 4, chat_sse),
    "chat-sse-7": (CHAT | 4 | 16, chat_sse), "chat-sse-cut": (GATEWAY | 4 | 8, chat_sse_cut),
    "responses-json": (RESP, responses_json), "responses-sse": (RESP | 4 | 8, responses_sse),
    "messages-json": (MSG, messages_json), "messages-sse": (MSG | 4, messages_sse),
    "messages-sse-bytes": (MSG | 4 | 24, messages_sse[:-40]),
    "error-json": (MSG, error_json),
    "chat-request": (CHAT, j({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                              "stream": True, "stream_options": {"include_usage": True},
                              "max_completion_tokens": 100})),
    "responses-request": (RESP, j({"model": "gpt-4.1", "input": "hi", "max_output_tokens": 50, "stream": True})),
    "messages-request": (MSG, j({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                                 "messages": [{"role": "user", "content": "hi"}]})),
}
for name, (header, body) in llm.items():
    write("llm_usage", name, bytes([header]) + body)

# --- http_jsonrpc: method | path << 3, header bits, header lines, the body -----
M = {"POST": 0, "GET": 1, "DELETE": 2, "PUT": 3}
P = {"/mcp": 0, "/messages/?session_id=abc": 1, "/v1/chat/completions": 2,
     "/.well-known/agent-card.json": 3, "/messages?sessionId=0f3c": 5, "/v1/messages": 6, "/": 8,
     "/a2a": 11}
H = ["content-type", "mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id", "a2a-version", "accept"]


def req(method, path, headers, body=b"", dup_method=None):
    bits = 0
    lines = b""
    for i, h in enumerate(H):
        if h in headers:
            bits |= 1 << i
            lines += headers[h].encode() + b"\n"
    if dup_method is not None:
        bits |= 0x80
        lines += dup_method.encode() + b"\n"
    return bytes([M[method] | (P[path] << 3), bits]) + lines + body


meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "c", "version": "1"}}
call_add = j({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
              "params": {"name": "add", "arguments": {"a": 2, "b": 3}, "_meta": meta}})
call_cafe = j({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
               "params": {"name": "caf\u00e9", "arguments": {}, "_meta": meta}})
ct = "application/json"
acc = "application/json, text/event-stream"
http = {
    "stateless-tools-call": req("POST", "/mcp", {"content-type": ct, "accept": acc,
                                                  "mcp-protocol-version": "2026-07-28",
                                                  "mcp-method": "tools/call", "mcp-name": "add"}, call_add),
    "stateless-base64-name": req("POST", "/mcp", {"content-type": ct, "mcp-protocol-version": "2026-07-28",
                                                   "mcp-method": "tools/call",
                                                   "mcp-name": "=?base64?Y2Fmw6k=?="}, call_cafe),
    "stateless-mismatch": req("POST", "/mcp", {"content-type": ct, "mcp-protocol-version": "2026-07-28",
                                                "mcp-method": "tools/list", "mcp-name": "sub"}, call_add),
    "dup-method": req("POST", "/mcp", {"content-type": ct, "mcp-method": "tools/call"}, call_add,
                      dup_method="tools/list"),
    "sessions-initialize": req("POST", "/mcp", {"content-type": ct, "accept": acc}, j(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "c", "version": "1"}}})),
    "sessions-resources-read": req("POST", "/mcp", {"content-type": ct, "mcp-protocol-version": "2025-06-18",
                                                     "mcp-session-id": "4f2a9c"}, j(
        {"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": "file:///etc/hosts"}})),
    "sessions-notification": req("POST", "/mcp", {"content-type": ct, "mcp-protocol-version": "2025-11-25",
                                                   "mcp-session-id": "4f2a9c"},
                                 j({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    "sessions-reply": req("POST", "/mcp", {"content-type": ct, "mcp-protocol-version": "2025-11-25",
                                            "mcp-session-id": "4f2a9c"},
                          j({"jsonrpc": "2.0", "id": 0, "result": {"action": "accept", "content": {"n": "x"}}})),
    "sessions-get-stream": req("GET", "/mcp", {"accept": "text/event-stream", "mcp-session-id": "4f2a9c",
                                                "mcp-protocol-version": "2025-11-25"}),
    "sessions-delete": req("DELETE", "/mcp", {"mcp-session-id": "4f2a9c"}),
    "legacy-message": req("POST", "/messages/?session_id=abc", {"content-type": ct}, j(
        {"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "greet", "arguments": {"n": "x"}}})),
    "legacy-message-ts": req("POST", "/messages?sessionId=0f3c", {"content-type": ct}, j(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})),
    "batch": req("POST", "/mcp", {"content-type": ct}, b"[" + call_add + b"]"),
    "a2a-1.0-send": req("POST", "/a2a", {"content-type": ct, "a2a-version": "1.0"}, j(
        {"jsonrpc": "2.0", "id": "r1", "method": "SendMessage",
         "params": {"message": {"role": "ROLE_USER", "parts": [{"text": "hi"}], "messageId": "m1",
                                "contextId": "ctx1"}}})),
    "a2a-0.3-send": req("POST", "/", {"content-type": ct}, j(
        {"jsonrpc": "2.0", "id": 1, "method": "message/send",
         "params": {"message": {"role": "user", "kind": "message", "parts": [{"kind": "text", "text": "hi"}],
                                "messageId": "m1"}}})),
    "a2a-0.3-tasks-get": req("POST", "/", {"content-type": ct}, j(
        {"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "t1"}})),
    "agent-card": req("GET", "/.well-known/agent-card.json", {}),
    "llm-chat": req("POST", "/v1/chat/completions", {"content-type": ct}, llm["chat-request"][1]),
    "llm-messages": req("POST", "/v1/messages", {"content-type": ct}, llm["messages-request"][1]),
    "plain-json": req("POST", "/", {"content-type": ct}, j({"jsonrpc": "1.0", "id": "x", "method": "getblock"})),
    "broken-jsonrpc": req("PUT", "/", {"content-type": ct}, b'{"jsonrpc":"2.0","method":"tools/call",'),
    "utf16": req("POST", "/mcp", {"content-type": ct, "mcp-protocol-version": "2025-06-18"},
                 '{"jsonrpc":"2.0","id":1,"method":"ping"}'.encode("utf-16-le")),
}
for name, data in http.items():
    write("http_jsonrpc", name, data)
