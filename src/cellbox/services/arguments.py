"""The code inside a ``python`` tool call's arguments: whole at the end of a turn, and piece by piece while the
model is still writing it, so clients see ``code_interpreter_call_code.delta`` events live."""

from __future__ import annotations

import json
import re

_CODE_KEY = re.compile(r'"code"\s*:\s*"')
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def code_from_arguments(arguments: str) -> tuple[str | None, str | None]:
    """(code, None) from the tool call's arguments, or (None, what is wrong). Models sometimes send the code
    itself rather than JSON, or name the field differently: both are accepted when unambiguous."""
    text = arguments.strip()
    if not text.startswith("{"):
        return (arguments, None) if text else (None, "the tool call had no code")
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        return None, f"the tool call's arguments are not valid JSON ({exc}); send {{\"code\": \"...\"}}"
    if isinstance(parsed, dict):
        if isinstance(parsed.get("code"), str):
            return parsed["code"], None
        strings = [v for v in parsed.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0], None
    return None, "the tool call's arguments must be a JSON object with a string field 'code'"


class CodeStream:
    """Decodes the ``"code"`` string of JSON arguments as they arrive; raw (non-JSON) arguments pass through.

    Work is proportional to the new text only: the decoder keeps its place in the buffer between pieces.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._mode: str | None = None  # None: undecided; "raw"; "json" (looking for the key); "string"; "done"
        self._pos = 0

    def feed(self, piece: str) -> str:
        self._buffer += piece
        if self._mode is None:
            head = self._buffer.lstrip()
            if not head:
                return ""
            self._mode = "json" if head.startswith("{") else "raw"
        if self._mode == "raw":
            out, self._pos = self._buffer[self._pos:], len(self._buffer)
            return out
        if self._mode == "json":
            found = _CODE_KEY.search(self._buffer)
            if found is None:
                return ""
            self._mode, self._pos = "string", found.end()
        if self._mode == "string":
            return self._decode()
        return ""

    def _decode(self) -> str:
        out: list[str] = []
        buffer, pos = self._buffer, self._pos
        while pos < len(buffer):
            char = buffer[pos]
            if char == '"':
                self._mode = "done"
                pos += 1
                break
            if char != "\\":
                out.append(char)
                pos += 1
                continue
            if pos + 1 >= len(buffer):
                break  # an escape split across pieces: wait for the rest
            kind = buffer[pos + 1]
            if kind != "u":
                out.append(_ESCAPES.get(kind, kind))
                pos += 2
                continue
            if pos + 6 > len(buffer):
                break
            try:
                code = int(buffer[pos + 2:pos + 6], 16)
                if 0xD800 <= code < 0xDC00:  # a surrogate pair needs its second half, if one follows
                    follows = buffer[pos + 6:pos + 8]
                    if len(follows) < 2 and "\\u".startswith(follows):
                        break  # can't tell yet
                    if follows == "\\u":
                        if pos + 12 > len(buffer):
                            break
                        low = int(buffer[pos + 8:pos + 12], 16)
                        if 0xDC00 <= low < 0xE000:
                            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                            pos += 12
                            continue
                out.append(chr(code))
                pos += 6
            except ValueError:  # not valid JSON: show it as written; the final parse reports the problem
                out.append(buffer[pos:pos + 6])
                pos += 6
        self._pos = pos
        return "".join(out)
