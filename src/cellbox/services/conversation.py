"""Responses items → chat-completions messages, and the tools as the model sees them.

Models are trained on a tool named ``python`` that runs code in a stateful Jupyter session, so that is what the
upstream is offered for ``code_interpreter``; each ``code_interpreter_call`` becomes an assistant tool call plus
the tool's answer. Function tools are offered under their own names; a ``function_call`` becomes an assistant
tool call and its ``function_call_output`` the tool's answer. What each other item becomes:

- ``reasoning``: its text goes on the next assistant message, as ``reasoning`` (renamed by the upstream client to
  the field that model server reads), so a reasoning model continues its chain of thought;
- ``item_reference``: replaced by the stored item it names before this point;
- items of tools Cellbox does not serve (``web_search_call``, ``mcp_call``, ...): nothing; they stay in the
  stored input only.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from typing import Any

MAX_TOOL_RESULT = 16_000  # characters of output the model gets back from one run; the middle is cut


def python_tool(timeout: float) -> dict[str, Any]:
    description = (
        "Execute Python code in a stateful Jupyter notebook environment: variables, imports and files persist "
        "between calls. Printed output, the value of the last expression and tracebacks are returned; matplotlib "
        "figures are shown automatically. The working directory is /mnt/data: read the user's files there and save "
        "files there to give them to the user. There is no internet access. Each call is interrupted after "
        f"{timeout:g} seconds."
    )
    return {"type": "function", "function": {
        "name": "python", "description": description,
        "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "Python code"}},
                       "required": ["code"]},
    }}


def tool_result(outputs: list[dict[str, Any]] | None, note: str | None = None, files: Sequence[str] = ()) -> str:
    """What the model reads after a run: the logs, a mark for each image, how it ended, the files it wrote."""
    parts: list[str] = []
    for output in outputs or []:
        if output.get("type") == "logs":
            parts.append(output.get("logs") or "")
        elif output.get("type") == "image":
            parts.append("[image displayed]\n")
    if note:
        parts.append(f"[{note}]\n")
    if files:
        parts.append(f"[files written: {', '.join(files)}]\n")
    text = "".join(parts) or "[no output]"
    if len(text) > MAX_TOOL_RESULT:
        half = MAX_TOOL_RESULT // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
    return text


def _text_of(part: dict[str, Any]) -> str | None:
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return str(part.get("text") or "")
    if kind == "refusal":
        return str(part.get("refusal") or "")
    if kind == "input_file":
        name = part.get("filename") or part.get("file_id") or "file"
        return f"[The user attached the file {name}; it is at /mnt/data/{name}]"
    return None


def image_key(part: dict[str, Any]) -> str | None:
    """What identifies an input image that can be copied into the container: its file id, or the digest of its
    data URL (an http(s) URL is for the model server to fetch; the container has no network)."""
    if part.get("file_id") and not part.get("image_url"):
        return str(part["file_id"])
    url = part.get("image_url") or ""
    if url.startswith("data:"):
        return "sha256:" + hashlib.sha256(url.encode()).hexdigest()
    return None


def _message(item: dict[str, Any], images: dict[str, str], image_names: dict[str, str]) -> dict[str, Any]:
    role = "system" if item["role"] == "developer" else item["role"]
    content = item["content"]
    if isinstance(content, str):
        return {"role": role, "content": content}
    texts: list[dict[str, Any]] = []
    for part in content:
        text = _text_of(part)
        if text is not None:
            texts.append({"type": "text", "text": text})
        elif part.get("type") == "input_image":
            url = part.get("image_url") or images.get(part.get("file_id") or "")
            if url:
                texts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
            if name := image_names.get(image_key(part) or ""):
                texts.append({"type": "text", "text": f"[This image is also at /mnt/data/{name}]"})
    if all(p["type"] == "text" for p in texts):  # plain strings are what every chat template understands
        return {"role": role, "content": "\n".join(p["text"] for p in texts)}
    return {"role": role, "content": texts}


def function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A client's function tool in chat-completions form (under its own name)."""
    function = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


_ALNUM = string.ascii_letters + string.digits


def tool_call_id(key: str) -> str:
    """The id the model sees for a call, derived from the item's id (a run) or its ``call_id`` (a function call):
    exactly 9 letters and digits, the one form every chat template accepts (Mistral's refuse any other length;
    OpenAI allows up to 40)."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_ALNUM))
        digits.append(_ALNUM[digit])
    return "".join(digits)


def _tool_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """Append a tool call to the assistant's message: joined to its text if the turn began with some, or to the
    calls just before it (a parallel batch), else as a message of its own."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def call_messages(messages: list[dict[str, Any]], item_id: str, code: str | None, result: str,
                  shown: Sequence[str] = ()) -> None:
    """Append a run as the assistant's tool call and its result. Images it displayed (data URLs) follow on a user
    message for a vision model: chat-completions tool messages carry text only."""
    call_id = tool_call_id(item_id)
    _tool_call(messages, {"id": call_id, "type": "function",
                          "function": {"name": "python", "arguments": json.dumps({"code": code or ""})}})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
    if shown:
        messages.append({"role": "user", "content": [
            {"type": "text", "text": "[The image(s) your code displayed:]"},
            *({"type": "image_url", "image_url": {"url": url}} for url in shown)]})


def displayed(outputs: list[dict[str, Any]] | None) -> list[str]:
    """The data URLs of the images in a run's outputs."""
    return [str(o["url"]) for o in outputs or [] if o.get("type") == "image" and str(o.get("url")).startswith("data:")]


def function_output_text(output: str | list[dict[str, Any]]) -> str:
    """A function's output as tool-message text (chat templates take text only there)."""
    if isinstance(output, str):
        return output
    parts = []
    for part in output:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(str(part.get("text") or ""))
        elif kind == "input_image":
            parts.append("[image]")
        elif kind == "input_file":
            parts.append(f"[file {part.get('filename') or part.get('file_id') or ''}]".replace(" ]", "]"))
    return "\n".join(parts)


def chat_messages(instructions: str | None, items: list[dict[str, Any]], tool_results: dict[str, str],
                  images: dict[str, str], image_names: dict[str, str] | None = None,
                  show_images: bool = False) -> list[dict[str, Any]]:
    """The conversation for the upstream. Many chat templates accept one system message, and only first, so the
    instructions and leading system or developer messages become one; later ones are sent as user messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    thought: list[str] = []  # reasoning waiting for the assistant message it led to
    for item in items:
        before = len(messages)
        if item.get("type") == "reasoning":
            thought.append(reasoning_text(item))
            continue
        if item.get("type") == "message":
            message = _message(item, images, image_names or {})
            if message["role"] == "system":
                if messages and messages[-1]["role"] == "system" and len(messages) == 1 \
                        and isinstance(message["content"], str):
                    messages[0]["content"] += "\n\n" + message["content"]
                    continue
                if messages:
                    message["role"] = "user"
            messages.append(message)
        elif item.get("type") == "code_interpreter_call":
            result = tool_results.get(item["id"]) or tool_result(
                item.get("outputs"), None if item.get("outputs") is not None else "output not available")
            call_messages(messages, item["id"], item.get("code"), result,
                          displayed(item.get("outputs")) if show_images else ())
        elif item.get("type") == "function_call" and item.get("status") != "incomplete":  # incomplete: never ran
            _tool_call(messages, {"id": tool_call_id(item["call_id"]), "type": "function",
                                  "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}})
        elif item.get("type") == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": tool_call_id(item["call_id"]),
                             "content": function_output_text(item["output"])})
        if len(messages) > before and thought:
            first = messages[before]
            if first["role"] == "assistant" and any(thought):
                first["reasoning"] = "\n".join(t for t in thought if t)
            thought = []
    return messages


def reasoning_text(item: dict[str, Any]) -> str:
    """A reasoning item's text: its full content if it has one, else its summary."""
    parts = [p for p in item.get("content") or [] if p.get("type") == "reasoning_text"] or [
        p for p in item.get("summary") or [] if p.get("type") == "summary_text"]
    return "\n".join(str(p.get("text") or "") for p in parts)
