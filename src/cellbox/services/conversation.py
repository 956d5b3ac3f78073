"""Responses items → chat-completions messages, and the ``python`` tool as the model sees it.

Models are trained on a tool named ``python`` that runs code in a stateful Jupyter session, so that is what the
upstream is offered; each ``code_interpreter_call`` becomes an assistant tool call plus the tool's answer.
"""

from __future__ import annotations

import hashlib
import json
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


def _message(item: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
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
    if all(p["type"] == "text" for p in texts):  # plain strings are what every chat template understands
        return {"role": role, "content": "\n".join(p["text"] for p in texts)}
    return {"role": role, "content": texts}


def tool_call_id(item_id: str) -> str:
    """The id the model sees for a run: derived from the item's id, and short (OpenAI allows 40 characters)."""
    return "call_" + hashlib.sha256(item_id.encode()).hexdigest()[:24]


def call_messages(messages: list[dict[str, Any]], item_id: str, code: str | None, result: str) -> None:
    """Append a run as the assistant's tool call (joined to its text, if the turn began with some) and its result."""
    call_id = tool_call_id(item_id)
    tool_call = {"id": call_id, "type": "function",
                 "function": {"name": "python", "arguments": json.dumps({"code": code or ""})}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
        last["tool_calls"] = [tool_call]
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [tool_call]})
    messages.append({"role": "tool", "tool_call_id": call_id, "content": result})


def chat_messages(instructions: str | None, items: list[dict[str, Any]], tool_results: dict[str, str],
                  images: dict[str, str]) -> list[dict[str, Any]]:
    """The conversation for the upstream. Many chat templates accept one system message, and only first, so the
    instructions and leading system or developer messages become one; later ones are sent as user messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        if item.get("type") == "message":
            message = _message(item, images)
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
            call_messages(messages, item["id"], item.get("code"), result)
    return messages
