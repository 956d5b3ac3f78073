"""A scripted stand-in for an OpenAI-compatible model server, used by the tests instead of a real LLM.

Run it as ``python -m tests.upstream --port N``; it binds 127.0.0.1 only.  A test queues replies per model name
(``POST /script``), the code under test then talks plain chat-completions to ``/v1`` and gets exactly those
replies back, streamed or not, byte-for-byte in the shape OpenAI sends.  Every request body is logged so the
test can assert on what the code under test actually sent.

Reply fields (they combine): ``text``, ``code``, ``arguments``/``name``, ``calls``, ``status``/``error``,
``delay``, ``drop``, ``usage``, ``finish_reason``, ``whole``, ``no_index``, ``same_index``, ``chunk_delay``,
``reasoning`` (chain of thought, streamed before the content) and ``reasoning_field`` (``reasoning`` as vLLM and
Ollama send it, the default, or ``reasoning_content`` as llama.cpp and SGLang do).

``style`` replays one real server's shapes (from their source, ../shared/reference/upstream-formats.md), whatever
the other keys say about fragmenting: ``vllm-hermes`` (only set fields, a tool header without ``arguments``,
``chatcmpl-tool-`` ids, text before the call, ``stop`` as finish reason for a named tool choice),
``vllm-gpt-oss`` (``reasoning``, a header with empty ``arguments``), ``ollama`` (whole calls with 8-character
ids, thinking split into a chunk of its own), ``llamacpp`` (``content: null`` first, ``reasoning_content``,
32-character ids without prefix, ``timings`` with the usage) and ``sglang`` (every delta field present, null
when unset, argument chunks with ``id`` and ``name`` null, ``reasoning_content``).
See ``_REPLY_KEYS``.

Streams use chunked transfer encoding on purpose: with ``Connection: close`` and no length, a truncated stream
is indistinguishable from a complete one for an HTTP client, so ``drop`` could not be observed as a failure.

The server half is standard library only (the tests launch it as a subprocess); ``ScriptedUpstream`` at the
bottom is the pytest/bench-side handle and imports httpx lazily.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    import httpx

HOST = "127.0.0.1"
TEXT_PIECE = 3  # characters of content per streamed chunk
ARGS_PIECE = 7  # characters of tool-call arguments per streamed chunk
DROP_AFTER = 2  # chunks sent before a `drop` reply cuts the stream

_REPLY_KEYS = frozenset(
    {
        "text",
        "reasoning",
        "reasoning_field",
        "code",
        "arguments",
        "name",
        "calls",
        "status",
        "error",
        "delay",
        "drop",
        "usage",
        "finish_reason",
        "whole",
        "no_index",
        "same_index",
        "chunk_delay",
        "style",
    }
)
STYLES = ("openai", "vllm-hermes", "vllm-gpt-oss", "ollama", "llamacpp", "sglang")
_CALL_KEYS = frozenset({"code", "arguments", "name"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"})


# --------------------------------------------------------------------------------------------------- shared state


class _State:
    """Per-model reply queues and request logs; every handler thread goes through the one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.logs: dict[str, list[dict[str, Any]]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}

    def models(self) -> list[str]:
        with self.lock:
            return sorted(set(self.queues) | set(self.logs))


def _validate_reply(reply: object) -> str | None:
    """Catch typos in a script at queue time, where the failing test is obvious, not mid-conversation."""
    if not isinstance(reply, dict):
        return f"reply must be an object, got {reply!r}"
    unknown = set(reply) - _REPLY_KEYS
    if unknown:
        return f"unknown reply keys {sorted(unknown)}; known: {sorted(_REPLY_KEYS)}"
    if reply.get("style", "openai") not in STYLES:
        return f"style must be one of {STYLES}, got {reply['style']!r}"
    for call in reply.get("calls") or []:
        if not isinstance(call, dict) or set(call) - _CALL_KEYS or not ({"code", "arguments"} & set(call)):
            return f"each of `calls` needs `code` or `arguments` (and optional `name`), got {call!r}"
    usage = reply.get("usage")
    if usage is not None and (not isinstance(usage, dict) or set(usage) - _USAGE_KEYS):
        return f"usage may only hold {sorted(_USAGE_KEYS)}, got {usage!r}"
    return None


# ------------------------------------------------------------------------------------------------ reply rendering


def _hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


def _tool_calls(reply: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, arguments) of every tool call the reply asks for, in order."""
    specs: list[dict[str, Any]] = list(reply.get("calls") or [])
    if "code" in reply or "arguments" in reply:
        specs.insert(0, {k: reply[k] for k in ("code", "arguments", "name") if k in reply})
    calls = []
    for spec in specs:
        name = spec.get("name", "python")
        args = spec["arguments"] if "arguments" in spec else json.dumps({"code": spec["code"]})
        calls.append((name, args))
    return calls


def _usage(reply: dict[str, Any]) -> dict[str, Any]:
    given = reply.get("usage") or {}
    prompt = int(given.get("prompt_tokens", 10))
    completion = int(given.get("completion_tokens", 5))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(given.get("cached_tokens", 0))},
        "completion_tokens_details": {"reasoning_tokens": int(given.get("reasoning_tokens", 0))},
    }


def _finish_reason(reply: dict[str, Any], calls: list[tuple[str, str]]) -> str:
    return reply.get("finish_reason") or ("tool_calls" if calls else "stop")


def _reasoning_field(reply: dict[str, Any]) -> str:
    style = reply.get("style", "openai")
    if style in ("llamacpp", "sglang"):
        return "reasoning_content"
    if style != "openai":
        return "reasoning"
    return str(reply.get("reasoning_field") or "reasoning")


def _call_id(style: str) -> str:
    if style.startswith("vllm"):
        return f"chatcmpl-tool-{_hex(32)}"
    if style == "ollama":
        return "call_" + uuid.uuid4().hex[:8]
    if style == "llamacpp":
        return (uuid.uuid4().hex + uuid.uuid4().hex)[:32]
    return f"call_{_hex()}"


def _completion(model: str, reply: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed `chat.completion` object."""
    calls = _tool_calls(reply)
    style = reply.get("style", "openai")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.get("text", None if calls else ""),
        "refusal": None,
    }
    if reply.get("reasoning"):
        message[_reasoning_field(reply)] = reply["reasoning"]
    if calls:
        message["tool_calls"] = [
            {"id": _call_id(style), "type": "function", "function": {"name": name, "arguments": args}}
            for name, args in calls
        ]
    return {
        "id": f"chatcmpl-{_hex()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _finish_reason(reply, calls), "logprobs": None}
        ],
        "usage": _usage(reply),
    }


def _chunks(model: str, reply: dict[str, Any], include_usage: bool, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every `chat.completion.chunk` of a streamed reply, in wire order (without the `[DONE]` sentinel)."""
    if reply.get("style", "openai") != "openai":
        return _styled_chunks(model, reply, include_usage, request)
    ident, created = f"chatcmpl-{_hex()}", int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            "usage": None,
        }

    calls = _tool_calls(reply)
    out = [chunk({"role": "assistant", "content": ""})]
    thought, field = reply.get("reasoning") or "", _reasoning_field(reply)
    out += [chunk({field: thought[i : i + TEXT_PIECE]}) for i in range(0, len(thought), TEXT_PIECE)]
    text = reply.get("text") or ""
    out += [chunk({"content": text[i : i + TEXT_PIECE]}) for i in range(0, len(text), TEXT_PIECE)]
    for index, (name, args) in enumerate(calls):
        where = {} if reply.get("no_index") else {"index": 0 if reply.get("same_index") else index}  # Ollama: 0
        head = {**where, "id": f"call_{_hex()}", "type": "function"}
        if reply.get("whole"):
            out.append(chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": args}}]}))
            continue
        out.append(chunk({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
        out += [
            chunk({"tool_calls": [{**where, "function": {"arguments": args[i : i + ARGS_PIECE]}}]})
            for i in range(0, len(args), ARGS_PIECE)
        ]
    out.append(chunk({}, _finish_reason(reply, calls)))
    if include_usage:
        out.append({**chunk({}), "choices": [], "usage": _usage(reply)})
    return out


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _styled_chunks(model: str, reply: dict[str, Any], include_usage: bool,
                   request: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed reply as one real server sends it (see the module docstring for what differs)."""
    style = reply["style"]
    ident, created = f"chatcmpl-{_hex()}", int(time.time())
    sglang = style == "sglang"
    empty_delta = {"role": None, "content": None, "reasoning_content": None, "tool_calls": None} if sglang else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": {**empty_delta, **delta}}
        if sglang:
            choice.update(logprobs=None, finish_reason=finish_reason, matched_stop=None)
        elif finish_reason is not None or style != "vllm-hermes":
            choice["finish_reason"] = finish_reason
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [choice], **extra}
        if sglang:
            body["usage"] = None
        return body

    calls = _tool_calls(reply)
    thought, text = reply.get("reasoning") or "", reply.get("text") or ""
    field = _reasoning_field(reply)
    first = {"role": "assistant", "content": None if style == "llamacpp" else ""}
    out = [chunk(first)]
    out += [chunk({field: piece}) for piece in _pieces(thought, TEXT_PIECE)]
    if style == "vllm-hermes" and calls and not text:
        text = "\n\n"  # what hermes-style models write before <tool_call>
    out += [chunk({"content": piece}) for piece in _pieces(text, TEXT_PIECE)]
    for index, (name, args) in enumerate(calls):
        ident_ = _call_id(style)
        if style == "ollama":
            out.append(chunk({"content": "", "tool_calls": [
                {"id": ident_, "index": index, "type": "function", "function": {"name": name, "arguments": args}}]}))
            continue
        head: dict[str, Any] = {"index": index, "id": ident_, "type": "function", "function": {"name": name}}
        if style in ("vllm-gpt-oss", "sglang"):
            head["function"]["arguments"] = ""
        out.append(chunk({"tool_calls": [head]}))
        for piece in _pieces(args, ARGS_PIECE):
            fragment: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
            if sglang:
                fragment = {"index": index, "id": None, "type": "function",
                            "function": {"name": None, "arguments": piece}}
            out.append(chunk({"tool_calls": [fragment]}))
    named = isinstance(request.get("tool_choice"), dict)
    finish = reply.get("finish_reason") or ("stop" if not calls or (style.startswith("vllm") and named)
                                            else "tool_calls")
    end: dict[str, Any] = {"stop_reason": None} if style.startswith("vllm") else {}
    last = chunk({}, finish)
    if end:
        last["choices"][0].update(end)
    out.append(last)
    if include_usage:
        usage = {**_usage(reply)}
        extra = {"timings": {"prompt_n": usage["prompt_tokens"], "predicted_n": usage["completion_tokens"]}} \
            if style == "llamacpp" else {}
        out.append({"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [], "usage": usage, **extra})
    return out


def _error_body(message: str, status: int) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# --------------------------------------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    """Routes the OpenAI surface (/v1/...) and the test-side control surface (/script, /requests, /headers)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: without this, each reply waits ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: it would only be noise in test output."""

    # ---- plumbing

    def _query(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return parts.path.rstrip("/") or "/", {k: v[-1] for k, v in parse_qs(parts.query).items()}

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, _error_body(message, status))

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _dispatch(self, method: str) -> None:
        path, query = self._query()
        try:
            route = _ROUTES.get((method, path))
            if route is None:
                self._send_error(404, f"no route {method} {path}")
                return
            route(self, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (timeout, cancelled stream): nothing to answer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ---- OpenAI surface

    def chat_completions(self, query: dict[str, str]) -> None:
        state = self.server.state
        try:
            body = self._body()
        except (ValueError, UnicodeDecodeError) as exc:
            self._send_error(400, f"request body is not JSON: {exc}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self._send_error(400, "request body must be a JSON object with a string `model`")
            return
        model = body["model"]
        with state.lock:
            state.logs.setdefault(model, []).append(body)
            state.headers.setdefault(model, []).append({k.lower(): v for k, v in self.headers.items()})
            queue = state.queues.get(model)
            reply = queue.pop(0) if queue else None
        if reply is None:
            self._send_error(400, f"no scripted reply left for model '{model}'")
            return
        if reply.get("delay"):
            time.sleep(float(reply["delay"]))
        if "status" in reply:
            status = int(reply["status"])
            self._send_error(status, str(reply.get("error") or f"scripted error {status}"))
            return
        if not body.get("stream"):
            if reply.get("drop"):
                self.close_connection = True  # hang up without a status line
                return
            self._send_json(200, _completion(model, reply))
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._stream(_chunks(model, reply, include_usage, body), reply)

    def _stream(self, chunks: list[dict[str, Any]], reply: dict[str, Any]) -> None:
        """Send an SSE stream, one chunked-encoding chunk per event, flushed at once so arrival is incremental."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        pause = float(reply.get("chunk_delay") or 0)
        for n, chunk in enumerate(chunks):
            if reply.get("drop") and n == DROP_AFTER:
                # No terminating 0-chunk: the client sees an incomplete body, exactly like a crashed upstream.
                self.close_connection = True
                return
            if n and pause:
                time.sleep(pause)
            self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def list_models(self, query: dict[str, str]) -> None:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "scripted"} for m in self.server.state.models()]
        self._send_json(200, {"object": "list", "data": data})

    # ---- control surface

    def post_script(self, query: dict[str, str]) -> None:
        try:
            body = self._body()
        except (ValueError, UnicodeDecodeError) as exc:
            self._send_error(400, f"script body is not JSON: {exc}")
            return
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self._send_error(400, "script body must be {'model': str, 'replies': [...]}")
            return
        replies = body.get("replies") or []
        problems = [p for p in map(_validate_reply, replies) if p] if isinstance(replies, list) else ["not a list"]
        if problems:
            self._send_error(400, f"bad scripted replies: {'; '.join(problems)}")
            return
        state = self.server.state
        with state.lock:
            queue = state.queues.setdefault(body["model"], [])
            queue.extend(replies)
            state.logs.setdefault(body["model"], [])
            remaining = len(queue)
        self._send_json(200, {"queued": remaining})

    def get_script(self, query: dict[str, str]) -> None:
        state = self.server.state
        with state.lock:
            remaining = len(state.queues.get(query.get("model", ""), []))
        self._send_json(200, {"remaining": remaining})

    def delete_script(self, query: dict[str, str]) -> None:
        state, model = self.server.state, query.get("model", "")
        with state.lock:
            state.queues.pop(model, None)
            state.logs.pop(model, None)
            state.headers.pop(model, None)
        self._send_json(200, {"cleared": model})

    def get_requests(self, query: dict[str, str]) -> None:
        state = self.server.state
        with state.lock:
            bodies = list(state.logs.get(query.get("model", ""), []))
        self._send_json(200, {"requests": bodies})

    def get_headers(self, query: dict[str, str]) -> None:
        state = self.server.state
        with state.lock:
            headers = list(state.headers.get(query.get("model", ""), []))
        self._send_json(200, {"headers": headers})


_ROUTES = {
    ("POST", "/v1/chat/completions"): _Handler.chat_completions,
    ("GET", "/v1/models"): _Handler.list_models,
    ("POST", "/script"): _Handler.post_script,
    ("GET", "/script"): _Handler.get_script,
    ("DELETE", "/script"): _Handler.delete_script,
    ("GET", "/requests"): _Handler.get_requests,
    ("GET", "/headers"): _Handler.get_headers,
}


class _Server(ThreadingHTTPServer):
    """Threaded so a delayed or streaming reply never blocks the test's control calls."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.state = _State()
        super().__init__((HOST, port), _Handler)


def _exit_when_parent_goes(stream: IO[str]) -> None:
    """Block until stdin closes (the parent exited or called stop), then exit: no orphaned servers."""
    stream.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="quit when the parent closes our stdin")
    args = parser.parse_args(argv)
    server = _Server(args.port)
    if args.exit_on_stdin_eof:
        threading.Thread(target=_exit_when_parent_goes, args=(sys.stdin,), daemon=True).start()
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------------------------------------------- test handle


REPO_ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ScriptedUpstream:
    """Test-side handle: launches the scripted server as a subprocess and drives its control routes."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._http: httpx.Client | None = None

    @property
    def url(self) -> str:
        """The base URL a server under test is configured with (OpenAI-style, ending in /v1)."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def control_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 30.0) -> ScriptedUpstream:
        import httpx

        # A file, not a pipe: a chatty child can never block on it. Closed in stop().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.upstream", "--port", str(self.port), "--exit-on-stdin-eof"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(f"scripted upstream not ready after {timeout:.0f}s")
                if sel.select(left):
                    line = self._proc.stdout.readline()
                    if line.strip() == "ready":
                        break
                    if not line:  # EOF: the child died
                        self._fail("scripted upstream exited before it was ready")
        self._http = httpx.Client(base_url=self.control_url, timeout=10.0)
        return self

    def _fail(self, why: str) -> None:
        stderr = b""
        if self._stderr is not None:
            self._stderr.seek(0)
            stderr = self._stderr.read()
        self.stop()
        raise RuntimeError(f"{why}:\n{stderr.decode(errors='replace')}")

    def _client(self) -> httpx.Client:
        if self._http is None:
            raise RuntimeError("ScriptedUpstream is not started")
        return self._http

    def script(self, model: str, *replies: dict[str, Any]) -> None:
        """Queue replies for `model`; each chat-completions request for it pops the next one."""
        response = self._client().post("/script", json={"model": model, "replies": list(replies)})
        if response.status_code != 200:
            raise ValueError(response.json()["error"]["message"])

    def requests(self, model: str) -> list[dict[str, Any]]:
        """Every request body sent for `model`, oldest first (including ones that found no reply)."""
        response = self._client().get("/requests", params={"model": model})
        response.raise_for_status()
        return list(response.json()["requests"])

    def headers(self, model: str) -> list[dict[str, str]]:
        """The (lower-cased) request headers of every request for `model`, parallel to `requests()`."""
        response = self._client().get("/headers", params={"model": model})
        response.raise_for_status()
        return list(response.json()["headers"])

    def remaining(self, model: str) -> int:
        """Replies still queued for `model`: 0 at the end of a test means the code made every expected call."""
        response = self._client().get("/script", params={"model": model})
        response.raise_for_status()
        return int(response.json()["remaining"])

    def clear(self, model: str) -> None:
        """Forget both the queue and the request log of `model`."""
        self._client().delete("/script", params={"model": model}).raise_for_status()

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
