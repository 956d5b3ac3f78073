"""The model server: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, llama.cpp, SGLang, OpenAI).

One model turn comes back as a stream of small events (text pieces, the start of a tool call, pieces of its
arguments) and ends with a ``Turn`` that holds the whole of it, whether the upstream streamed or not. Upstreams
differ in how they fragment tool calls, so fragments are merged by ``index``, falling back to ``id`` and order.

The HTTP client is aiohttp: on loopback it spends half of httpx's time per request and per streamed chunk
(BENCHMARKS.md, stop 14), and every model turn of every response goes through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from cellbox.errors import UpstreamRejected, UpstreamUnavailable
from cellbox.schemas.responses import InputTokensDetails, OutputTokensDetails, Usage
from cellbox.services.metrics import Metrics

log = logging.getLogger(__name__)
RETRY_PAUSES = (0.5, 2.0)  # seconds before the second and the third try
MAX_RETRY_AFTER = 10.0  # longest Retry-After honoured; a busier server fails the turn
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
MAX_LINE = 8 << 20  # longest line of a streamed reply (a tool call's whole arguments may come in one chunk)
MAX_REPLY = 64 << 20  # longest whole (unstreamed) reply or error body


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""


@dataclass
class Turn:
    text: str = ""
    reasoning: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None


Event = TextDelta | ReasoningDelta | CallStarted | ArgumentsDelta | Turn
REASONING_FIELDS = ("reasoning", "reasoning_content")  # vLLM >= 0.11 and Ollama; llama.cpp, SGLang, older vLLM


def _reasoning_of(message: dict[str, Any]) -> tuple[str, str | None]:
    """The chain of thought in a message or delta, and the field the server put it in."""
    for name in REASONING_FIELDS:
        if isinstance(text := message.get(name), str) and text:
            return text, name
    return "", None


def usage_of(raw: dict[str, Any] | None) -> Usage:
    """Chat-completions token counts in the Responses API's shape."""
    if not raw:
        return Usage()
    prompt, completion = int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
    cached = int((raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return Usage(input_tokens=prompt, output_tokens=completion,
                 total_tokens=int(raw.get("total_tokens") or prompt + completion),
                 input_tokens_details=InputTokensDetails(cached_tokens=cached),
                 output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning))


class _Merger:
    """Assembles streamed tool-call fragments into whole calls, announcing each call once."""

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []
        self._by_key: dict[tuple[str, object], int] = {}

    def feed(self, fragment: dict[str, Any]) -> list[Event]:
        function = fragment.get("function") or {}
        given_id = fragment.get("id") or ""
        key: tuple[str, object] | None = (("index", fragment["index"]) if isinstance(fragment.get("index"), int)
                                          else ("id", given_id) if given_id else None)
        # Without index or id, a fragment continues the latest call.
        position = self._by_key.get(key) if key else (len(self.calls) - 1 if self.calls else None)
        if position is not None and given_id and self.calls[position].id not in ("", given_id):
            position = None  # Ollama numbers every call of a parallel batch 0: a new id is a new call
        events: list[Event] = []
        if position is None:
            position = len(self.calls)
            self.calls.append(ToolCall(id=given_id, name=function.get("name") or "python"))
            events.append(CallStarted(position, self.calls[position].name))
        if key:
            self._by_key[key] = position
        call = self.calls[position]
        call.id = call.id or given_id
        if piece := function.get("arguments"):
            if isinstance(piece, dict):  # some servers send parsed arguments
                piece = json.dumps(piece)
            call.arguments += piece
            events.append(ArgumentsDelta(position, piece))
        return events


class Upstream:
    def __init__(self, base_url: str, api_key: str, aliases: dict[str, str], timeout: float,
                 retry_pauses: tuple[float, ...] = RETRY_PAUSES, metrics: Metrics | None = None) -> None:
        self._metrics = metrics or Metrics()
        self.base_url = base_url.rstrip("/")
        self._aliases = aliases
        self._retry_pauses = retry_pauses
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No limit on the whole turn, ``timeout`` between bytes; the proxy settings of the environment apply.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=10.0, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the server's event loop
        self._reasoning_field: str | None = None  # learned from the server's own replies

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout, trust_env=True)
        return self._session

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    def model_for(self, requested: str) -> str:
        return self._aliases.get(requested) or self._aliases.get("*") or requested

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def models(self) -> list[str]:
        """What the model server serves (``GET /models``), or nothing when it is not configured or does not
        answer within a few seconds: a model list must not wait on a busy model server."""
        if not self.configured:
            return []
        try:
            async with self._http().get(f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=5.0)) as reply:
                data = json.loads(await _body(reply)).get("data") if reply.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, UpstreamUnavailable, ValueError, AttributeError):
            return []
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else []

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    async def turn(self, body: dict[str, Any], stream: bool) -> AsyncIterator[Event]:
        """One chat completion; the last event is always the ``Turn``. Failures raise UpstreamRejected (the
        request is at fault: unknown model, context too long) or UpstreamUnavailable (anything else).

        A model server that is briefly busy or restarting (no connection, 408, 429, 5xx) is asked again, twice,
        as long as nothing of the turn has arrived: a failure later in a response would lose the code runs so far.
        """
        if not self.configured:
            raise UpstreamRejected("no model server is configured: set CELLBOX_UPSTREAM_BASE_URL "
                                   "(e.g. http://127.0.0.1:11434/v1) to use /v1/responses", "model")
        body = for_server(self.base_url, {**body, "model": self.model_for(body["model"]), "stream": stream})
        body["messages"] = [self._with_reasoning_field(m) for m in body["messages"]]
        if stream:
            body["stream_options"] = {"include_usage": True}
        self._metrics.upstream_turns.inc()
        for pause in (*self._retry_pauses, None):
            try:
                async for event in self._attempt(body, stream):
                    yield event
                return
            except _Transient as transient:
                if pause is None:
                    self._metrics.upstream_errors.labels("unavailable").inc()
                    raise transient.error from None
                delay = min(transient.retry_after or pause, MAX_RETRY_AFTER)
                log.warning("%s; asking again in %g s", transient.error, delay)
                await asyncio.sleep(delay)
            except UpstreamRejected:
                self._metrics.upstream_errors.labels("rejected").inc()
                raise
            except UpstreamUnavailable:
                self._metrics.upstream_errors.labels("unavailable").inc()
                raise

    def _with_reasoning_field(self, message: dict[str, Any]) -> dict[str, Any]:
        """Reasoning goes back on the assistant message under the field this server sends it in (gpt-oss on vLLM
        and Ollama read ``reasoning``, llama.cpp and Qwen's templates ``reasoning_content``); under both until the
        server has shown which."""
        if "reasoning" not in message:
            return message
        message = dict(message)
        text = message.pop("reasoning")
        if _is_openai(self.base_url):  # its chat completions never send reasoning, and refuse unknown fields
            return message
        for name in (self._reasoning_field,) if self._reasoning_field else REASONING_FIELDS:
            message[name] = text
        return message

    def _learn(self, field_name: str | None) -> None:
        if field_name is not None:
            self._reasoning_field = field_name

    async def _attempt(self, body: dict[str, Any], stream: bool) -> AsyncIterator[Event]:
        try:
            async with self._http().post(f"{self.base_url}/chat/completions", json=body) as reply:
                if reply.status >= 400:
                    error = _refusal(reply.status, await _body(reply))
                    if reply.status in TRANSIENT:
                        raise _Transient(error, _retry_after(reply.headers))
                    raise error
                if stream:
                    async for event in _parse_stream(_lines(reply), self._learn):
                        yield event
                else:
                    for event in _as_events(_parse_whole(await _body(reply), self._learn)):
                        yield event
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _Transient(UpstreamUnavailable(f"the model server at {self.base_url} is unreachable: "
                                                 f"{exc or type(exc).__name__}")) from None
        except TimeoutError as exc:
            raise UpstreamUnavailable(f"the model server at {self.base_url} did not answer in time "
                                      f"({type(exc).__name__})") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError):
            raise UpstreamUnavailable(f"the model server at {self.base_url} closed the stream before finishing "
                                      "its reply") from None
        except aiohttp.http_exceptions.LineTooLong:
            raise UpstreamUnavailable(f"the model server at {self.base_url} sent a stream line over "
                                      f"{MAX_LINE / 2**20:g} MiB") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"the model server at {self.base_url} failed: "
                                      f"{exc or type(exc).__name__}") from None


async def _body(reply: aiohttp.ClientResponse) -> bytes:
    """A whole reply body, bounded."""
    body = bytearray()
    async for chunk in reply.content.iter_any():
        body += chunk
        if len(body) > MAX_REPLY:
            raise UpstreamUnavailable(f"the model server sent a reply over {MAX_REPLY / 2**20:g} MiB")
    return bytes(body)


async def _lines(reply: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """A streamed reply's lines, each bounded, without their line ends."""
    while raw := await reply.content.readline(max_line_length=MAX_LINE):
        yield raw.decode("utf-8", "replace").rstrip("\r\n")


def _is_openai(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def for_server(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's own API refuses the old ``max_tokens`` for its reasoning models and wants ``max_completion_tokens``,
    which not every self-hosted server knows yet: each gets the name it understands."""
    if "max_tokens" in body and _is_openai(base_url):
        body = {**body, "max_completion_tokens": body["max_tokens"]}
        del body["max_tokens"]
    return body


class _Transient(Exception):
    """A failure worth one more try: nothing of the reply has arrived."""

    def __init__(self, error: Exception, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error, self.retry_after = error, retry_after


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


def _refusal(status: int, body: bytes) -> Exception:
    text = body.decode("utf-8", "replace")
    try:
        detail = json.loads(text)
        message = (detail.get("error") or {}).get("message") if isinstance(detail.get("error"), dict) else None
        message = message or detail.get("error") or detail.get("detail") or text
    except (ValueError, AttributeError):
        message = text
    message = f"the model server answered {status}: {str(message)[:1000]}"
    if 400 <= status < 500 and status not in (401, 403, 408, 429):
        return UpstreamRejected(message)
    return UpstreamUnavailable(message)


def _parse_whole(body: bytes, learn: Callable[[str | None], None]) -> Turn:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamUnavailable("the model server sent a malformed completion: "
                                  f"{body[:300].decode('utf-8', 'replace')}") from None
    merger = _Merger()
    for fragment in message.get("tool_calls") or []:
        merger.feed(fragment)
    reasoning, field_name = _reasoning_of(message)
    learn(field_name)
    return Turn(text=message.get("content") or "", reasoning=reasoning, calls=merger.calls,
                usage=usage_of(data.get("usage")), finish_reason=choice.get("finish_reason"))


def _as_events(turn: Turn) -> list[Event]:
    """A whole reply told as the same events a stream gives, so callers have one path."""
    events: list[Event] = [ReasoningDelta(turn.reasoning)] if turn.reasoning else []
    events += [TextDelta(turn.text)] if turn.text else []
    for index, call in enumerate(turn.calls):
        events.append(CallStarted(index, call.name))
        if call.arguments:
            events.append(ArgumentsDelta(index, call.arguments))
    return [*events, turn]


async def _parse_stream(lines: AsyncIterator[str], learn: Callable[[str | None], None]) -> AsyncIterator[Event]:
    turn, merger, done = Turn(), _Merger(), False
    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            done = True
            break
        try:
            chunk = json.loads(payload)
        except ValueError:
            raise UpstreamUnavailable(f"the model server sent a malformed stream chunk: {payload[:300]}") from None
        if isinstance(chunk.get("error"), dict | str):
            error = chunk["error"]
            raise UpstreamUnavailable(f"the model server failed mid-stream: "
                                      f"{error.get('message') if isinstance(error, dict) else error}")
        if chunk.get("usage"):
            turn.usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            thought, field_name = _reasoning_of(delta)
            if thought:
                learn(field_name)
                turn.reasoning += thought
                yield ReasoningDelta(thought)
            if text := delta.get("content"):
                turn.text += text
                yield TextDelta(text)
            for fragment in delta.get("tool_calls") or []:
                for event in merger.feed(fragment):
                    yield event
            turn.finish_reason = choice.get("finish_reason") or turn.finish_reason
    if not done and turn.finish_reason is None:
        raise UpstreamUnavailable("the model server closed the stream before finishing its reply")
    turn.calls = merger.calls
    yield turn
