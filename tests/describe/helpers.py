"""The describe tests' LLM: a real OpenAI-compatible chat server on 127.0.0.1 (stdlib http.server, ephemeral
port) with scripted faults, and the healthy server's answer per label."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LABEL = re.compile(r"^I want to grasp a (.+?)\. First, provide its object category")


def answer_for(label: str) -> str:
    """The healthy server's answer for ``label`` (three sentences, with markdown like real models)."""
    return (f"**Category:** {label} is a household object.\n\n"
            f"The {label} has a simple convex shape, about 9.5 cm tall. Grip it firmly around the middle!")


class FakeLLM:
    """Chat-completions server. ``script[label]`` is a list of actions used one per request for that label
    (then "ok"): "ok", "429", "500", "401", "sleep" (longer than the client's timeout), "badjson",
    "nochoices", "empty", "trickle" (the body one byte per ``trickle_s``), "trickle_headers" (the status
    line and headers that way), "length" (finish_reason=length), "garbage" (binary junk as content),
    "huge" (``huge_bytes`` of content), "huge_chunked" (as much padding, chunked), "echo" (the request's Authorization
    header in the answer and as
    the model name). ``delay`` slows every request (to measure concurrency)."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.delay = 0.0
        self.sleep_s = 3.0  # longer than fast_llm's per-request limit
        self.trickle_s = 0.1
        self.huge_bytes = 64 << 20
        self.requests: list[dict] = []  # {"label", "model", "auth", "action"}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake._handle(self)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that timed out hung up: fine
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    answer_for = staticmethod(answer_for)

    def count(self, label: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if label is None or r["label"] == label)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        if h.path != "/v1/chat/completions":
            return self._send(h, 404, {"error": {"message": "not found"}})
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))))
        prompt = body["messages"][-1]["content"]
        m = _LABEL.match(prompt)
        label = m.group(1) if m else "?"
        with self._lock:
            queue = self.script.get(label, [])
            action = queue.pop(0) if queue else "ok"
            self.requests.append({"label": label, "model": body["model"], "auth": h.headers.get("Authorization"),
                                  "action": action, "prompt": prompt})
        if self.delay:
            time.sleep(self.delay)
        if action == "429":
            return self._send(
                h, 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0"}
            )
        if action == "500":
            return self._send(h, 500, {"error": {"message": "boom"}})
        if action == "401":
            return self._send(h, 401, {"error": {"message": "bad key"}})
        if action == "sleep":
            time.sleep(self.sleep_s)
        if action == "badjson":
            return self._send_raw(h, 200, b'{"id": "x", "choices": [')
        base = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"] + "-served",
        }
        if action == "nochoices":
            return self._send(h, 200, base)
        content = {"empty": "   ", "garbage": "\x00\x07\ufffd\x1b[2J" * 20 + "%$#@!" * 30,
                   "huge": "word " * (self.huge_bytes // 5)}.get(action, answer_for(label))
        auth = h.headers.get("Authorization") or ""
        if action == "echo":
            content, base["model"] = f"{content} (you sent {auth})", auth
        reply = {**base, "choices": [{"index": 0, "finish_reason": "length" if action == "length" else "stop",
                                      "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": 30, "completion_tokens": 30, "total_tokens": 60}}
        if action in ("trickle", "trickle_headers"):
            return self._trickle(h, json.dumps(reply).encode(), headers_too=action == "trickle_headers")
        if action == "huge_chunked":  # no Content-Length: only counting the bytes read can stop it
            return self._chunked(h, json.dumps({**reply, "pad": "x" * self.huge_bytes}).encode())
        self._send(h, 200, reply)

    def _chunked(self, h, data: bytes, size: int = 1 << 16) -> None:
        try:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(data), size):
                part = data[i : i + size]
                h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
    def _trickle(self, h, data: bytes, headers_too: bool) -> None:
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
        try:
            if not headers_too:
                h.wfile.write(head)
                h.wfile.flush()
            for b in (head if headers_too else b"") + data:
                h.wfile.write(bytes([b]))
                h.wfile.flush()
                time.sleep(self.trickle_s)
        except OSError:  # the client hung up: what a deadline is for
            pass

    def _send(self, h, status, obj, headers=None):
        self._send_raw(h, status, json.dumps(obj).encode(), headers)

    def _send_raw(self, h, status, data, headers=None):
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
