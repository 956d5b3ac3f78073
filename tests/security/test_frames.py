"""Hostile frames: user code shares a process with the runtime, so it can write anything to the channel.

Each test finds the runtime's own ``Outbox`` through the garbage collector (and the ``Executor``, for the current
request id, through its display hook) and forges frames with it, or writes raw bytes to the socket under its lock. A
malformed frame ends the execution as ``crashed`` and restarts the session with its files; output beyond the
host's limits is truncated behind a marker. Either way the server carries on and the session works afterwards.
"""

from __future__ import annotations

import textwrap

import pytest

from cellbox.config import Settings
from cellbox.sandbox.events import Display, Error, ExecutionResult, Result, Stream
from cellbox.sandbox.frames import MAX_FRAMES, frame_ceiling
from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import FORGE

MALFORMED = {
    "display_data_not_a_mapping": 'forge({"type": "display", "data": "text", "metadata": {}})',
    "display_value_not_a_string": 'forge({"type": "display", "data": {"text/plain": 5}, "metadata": {}})',
    "display_metadata_not_a_mapping": 'forge({"type": "display", "data": {"text/plain": "x"}, "metadata": [1]})',
    "image_not_a_string": 'forge({"type": "display", "data": {"image/png": 5}, "metadata": {}})',
    "image_not_base64": 'forge({"type": "display", "data": {"image/png": "not base64!"}, "metadata": {}})',
    "result_data_not_a_mapping": 'forge({"type": "result", "data": [1, 2], "metadata": {}})',
    "stream_without_fields": 'forge({"type": "stream"})',
    "stream_to_stdin": 'forge({"type": "stream", "name": "stdin", "text": "x"})',
    "stream_text_not_a_string": 'forge({"type": "stream", "name": "stdout", "text": 5})',
    "error_without_fields": 'forge({"type": "error", "ename": "E"})',
    "error_traceback_not_a_list": 'forge({"type": "error", "ename": "E", "evalue": "v", "traceback": "tb"})',
    "done_with_a_strange_status": 'forge({"type": "done", "status": "great", "execution_count": 1})',
    "done_count_not_an_int": 'forge({"type": "done", "status": "ok", "execution_count": "1"})',
    "unknown_type": 'forge({"type": "surprise"})',
    "id_not_a_string": 'forge({"type": "stream", "name": "stdout", "text": "x", "id": 5})',
    "body_not_json": 'raw(body("hello"))',
    "body_not_an_object": 'raw(body("[1, 2]"))',
    "body_nested_too_deep": 'raw(body("[" * 100000 + "]" * 100000))',
    "lone_surrogate": 'raw(body(\'{"type":"stream","name":"stdout","text":"\\\\udcff","id":\' + rid + "}"))',
    "garbage_bytes": r'raw(b"\xde\xad\xbe\xef" * 64)',
}


def returned(result: ExecutionResult) -> int:
    """Bytes of payload an execution brought back to the server."""
    total = 0
    for output in result.outputs:
        if isinstance(output, Stream):
            total += len(output.text.encode())
        elif isinstance(output, Display | Result):
            total += sum(len(str(value).encode()) for value in output.data.values())
        elif isinstance(output, Error):
            total += len(output.text.encode())
    return total


async def check_session_works(box: Sandbox) -> None:
    after = await box.run("1 + 1")
    assert after.ok, (after.status, after.message)
    assert after.outputs == [Result({"text/plain": "2"})]


@pytest.mark.parametrize("forgery", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_frame_crashes_the_execution_and_the_session_restarts_with_its_files(
        box: Sandbox, forgery: str) -> None:
    box.upload("kept.txt", b"kept")
    await box.run("x = 1")
    result = await box.run(FORGE + forgery + "\nprint('after the forgery')")
    assert result.status == "crashed", (result.status, result.message, result.outputs)
    assert result.restarted is True
    assert "malformed message" in (result.message or "")
    assert result.error is not None
    assert result.error.ename == "SessionCrashed"
    await check_session_works(box)
    assert (await box.run("x")).error is not None  # a fresh session: the variable is gone
    assert (await box.run("open('/mnt/data/kept.txt').read()")).outputs == [Result({"text/plain": "'kept'"})]


OVERSIZE = {
    # one frame above the host's ceiling: skipped unread, never held in the server's memory
    "giant_display": 'forge({"type": "display", "data": {"text/plain": "x" * (20 * MIB)}, "metadata": {}})',
    "giant_error": 'forge({"type": "error", "ename": "E", "evalue": "x" * (20 * MIB), "traceback": []})',
    # a header claiming 200 MiB, and 200 MiB that follow it: a valid frame padded with JSON whitespace
    "header_of_200_mib": ('padded = \'{"type":"stream","name":"stdout","text":"x","id":\' + rid + "}"\n'
                          'raw(struct.pack("!I", 200 * MIB), padded.encode(), *[b" " * MIB] * 199,'
                          ' b" " * (MIB - len(padded)))'),
    # frames under the ceiling that add up to more than an execution may bring back
    "many_big_streams": 'for _ in range(20):\n    forge({"type": "stream", "name": "stdout", "text": "x" * MIB})',
    "many_big_displays": ('for _ in range(10):\n'
                          '    forge({"type": "display", "data": {"text/plain": "x" * (2 * MIB)}, "metadata": {}})'),
    "many_small_frames": ('for _ in range(2 * MAX_FRAMES):\n'
                          '    forge({"type": "stream", "name": "stdout", "text": "x"})'),
    "big_image": 'forge({"type": "display", "data": {"image/png": "AAAA" * (2 * MIB)}, "metadata": {}})',
}


@pytest.mark.parametrize("forgery", OVERSIZE.values(), ids=OVERSIZE.keys())
async def test_output_beyond_the_hosts_limits_is_truncated_and_the_code_interrupted(
        box: Sandbox, settings: Settings, forgery: str) -> None:
    await box.run("x = 41")
    # The code forges, then waits for the host's interrupt (wherever it lands) and leaves a mark that it came.
    # Short sleeps: a SIGINT that lands just before a long sleep starts would only be handled when it ends.
    code = (f"MAX_FRAMES = {MAX_FRAMES}\nimport time\ntry:\n{textwrap.indent(forgery, '    ')}\n"
            "    for _ in range(12_000):\n        time.sleep(0.01)\n"
            "except KeyboardInterrupt:\n    open('/mnt/data/interrupted', 'w').close()\n")
    result = await box.run(FORGE + code, timeout=120)
    assert result.status == "ok", (result.status, result.message, result.stderr[-500:])
    assert result.restarted is False
    assert "[output truncated: " in result.stderr
    assert "truncated" in (result.message or "")
    assert returned(result) <= frame_ceiling(settings.output_limit) + 4096
    assert len(result.outputs) <= MAX_FRAMES + 1
    assert box.download("interrupted") == b""
    assert (await box.run("x + 1")).outputs == [Result({"text/plain": "42"})]  # the session was kept


async def test_stdout_and_stderr_are_capped_at_the_output_limit_on_the_host_too(box: Sandbox,
                                                                                settings: Settings) -> None:
    forgery = 'for _ in range(4):\n    forge({"type": "stream", "name": "stderr", "text": "é" * MIB})'
    result = await box.run(FORGE + forgery)
    assert "[output truncated: " in result.stderr
    assert len((result.stdout + result.stderr).encode()) <= settings.output_limit + 4096 + 256  # and our marker
    await check_session_works(box)


@pytest.mark.parametrize("code", [
    "'x' * (20 << 20)",  # the last expression's value
    "from IPython.display import display\ndisplay({'text/plain': 'x' * (20 << 20)}, raw=True)",
    "raise ValueError('x' * (20 << 20))",
], ids=["result", "display", "exception"])
async def test_giant_output_of_ordinary_code_is_truncated_and_the_session_kept(box: Sandbox, settings: Settings,
                                                                               code: str) -> None:
    await box.run("x = 41")
    result = await box.run(code)
    assert result.status in ("ok", "error"), (result.status, result.message)  # the code ended on its own
    assert result.restarted is False
    assert "[output truncated: " in result.stderr
    assert returned(result) <= frame_ceiling(settings.output_limit) + 4096
    assert (await box.run("x + 1")).outputs == [Result({"text/plain": "42"})]


async def test_a_header_whose_body_never_comes_ends_at_the_timeout(box: Sandbox) -> None:
    box.upload("kept.txt", b"kept")
    result = await box.run(FORGE + 'raw(struct.pack("!I", 200 * MIB))', timeout=2)
    assert result.status == "timeout", (result.status, result.message)
    assert result.restarted is True
    await check_session_works(box)
    assert box.download("kept.txt") == b"kept"
