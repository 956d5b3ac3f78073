"""Prefixed identifiers in OpenAI's shapes, and the clock."""

import secrets
import string
import time


def new_id(prefix: str, hex_chars: int = 48) -> str:
    return prefix + secrets.token_hex(hex_chars // 2)


_BASE62 = string.ascii_letters + string.digits


def container_id() -> str:
    return new_id("cntr_", 48)


def container_file_id() -> str:
    return new_id("cfile_", 32)


def file_id() -> str:
    return "file-" + "".join(secrets.choice(_BASE62) for _ in range(22))


def execution_id() -> str:
    return new_id("exec_", 32)


def response_id() -> str:
    return new_id("resp_", 48)


def message_id() -> str:
    return new_id("msg_", 48)


def call_id() -> str:
    """A code_interpreter_call item."""
    return new_id("ci_", 48)


def function_item_id() -> str:
    """A function_call item (its ``id``; the model-facing ``call_id`` is :func:`function_call_id`)."""
    return new_id("fc_", 48)


def function_call_id() -> str:
    return "call_" + "".join(secrets.choice(_BASE62) for _ in range(24))


def conversation_id() -> str:
    return new_id("conv_", 48)


def reasoning_id() -> str:
    return new_id("rs_", 48)


def item_id(kind: str) -> str:
    """An input item given without an id: function_call_output ("fco_"), reasoning ("rs_"), anything else."""
    return new_id({"function_call_output": "fco_", "reasoning": "rs_"}.get(kind, "item_"), 48)


def now() -> int:
    """Unix seconds, the unit of every ``*_at`` field."""
    return int(time.time())
