"""Execution semantics users rely on: a notebook-like, stateful session in every container."""

from __future__ import annotations

import asyncio
import base64

from cellbox.errors import SandboxFailure
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.events import Display, Error, Finished, Result, Stream
from cellbox.sandbox.sandbox import INLINE_SCAN_ENTRIES, Sandbox

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def kinds(outputs: list) -> list[str]:
    return [type(o).__name__ for o in outputs]


async def test_state_survives_between_executions(box: Sandbox) -> None:
    assert (await box.run("x = 1")).ok
    result = await box.run("x += 1; x")
    assert result.ok
    assert result.outputs[-1].data["text/plain"] == "2"
    assert result.execution_count == 2


async def test_last_expression_is_the_result_and_semicolon_silences_it(box: Sandbox) -> None:
    shown = await box.run("a = [1, 2]\na")
    assert isinstance(shown.outputs[-1], Result)
    assert shown.outputs[-1].data["text/plain"] == "[1, 2]"
    assert (await box.run("a;")).outputs == []


async def test_outputs_come_back_in_order(box: Sandbox) -> None:
    result = await box.run("print('a'); display('b'); print('c'); 'd'")
    assert kinds(result.outputs) == ["Stream", "Display", "Stream", "Result"]
    assert [getattr(o, "text", None) or o.data["text/plain"] for o in result.outputs] == ["a\n", "'b'", "c\n", "'d'"]


async def test_stdout_and_stderr_are_separate_streams(box: Sandbox) -> None:
    result = await box.run("import sys; print('out'); print('err', file=sys.stderr)")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


async def test_dataframes_come_back_as_html_and_text(box: Sandbox) -> None:
    result = await box.run("import pandas as pd; pd.DataFrame({'a': [1, 2]})")
    assert {"text/plain", "text/html"} <= set(result.outputs[-1].data)
    assert "<table" in result.outputs[-1].data["text/html"]


async def test_errors_are_readable_tracebacks_without_colour(box: Sandbox) -> None:
    result = await box.run("def f():\n    return 1 / 0\nf()")
    assert result.status == "error"
    error = result.error
    assert error is not None
    assert error.ename == "ZeroDivisionError"
    assert "division by zero" in error.evalue
    assert "\x1b" not in error.text
    assert "return 1 / 0" in error.text


async def test_syntax_errors_are_reported(box: Sandbox) -> None:
    result = await box.run("def broken(:")
    assert result.status == "error"
    assert result.error is not None
    assert result.error.ename == "SyntaxError"


async def test_magics_and_shell_commands(box: Sandbox) -> None:
    assert "/mnt/data" in (await box.run("%pwd")).outputs[-1].data["text/plain"]
    shell = await box.run("!echo hello from the shell; exit 3")
    assert "hello from the shell" in shell.stdout
    assert (await box.run("_exit_code")).outputs[-1].data["text/plain"] == "3"
    captured = await box.run("lines = !printf 'a\\nb\\n'\nlist(lines)")
    assert captured.outputs[-1].data["text/plain"] == "['a', 'b']"


async def test_subprocess_and_c_level_output_is_captured(box: Sandbox) -> None:
    code = "import os, subprocess\nsubprocess.run(['echo', 'from-child'])\nos.system('echo via-system')"
    result = await box.run(code)
    assert "from-child" in result.stdout
    assert "via-system" in result.stdout


async def test_figures_come_back_as_png_without_savefig_and_are_closed(box: Sandbox) -> None:
    result = await box.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]);\nplt.figure(); plt.bar([1], [2]);")
    assert result.ok
    assert len(result.images) == 2
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in result.images)
    again = await box.run("import matplotlib.pyplot as plt; len(plt.get_fignums())")
    assert again.images == []
    assert again.outputs[-1].data["text/plain"] == "0"


async def test_the_templates_warm_up_figure_leaves_nothing_behind(box: Sandbox) -> None:
    """The template draws a throwaway figure before it forks (so first plots are cheaper) and turns pyplot's redraw
    after each cell off (the inline backend draws anyway): a container sees no figure, no used figure number, no
    execution, and the same PNG for its first plot as for a later one."""
    state = await box.run("import matplotlib.pyplot as plt\n"
                          "hooks = [f.__name__ for f in get_ipython().events.callbacks['post_execute']]\n"
                          "plt.get_fignums(), '_draw_all_if_interactive' in hooks")
    assert state.outputs[-1].data["text/plain"] == "([], False)"
    assert state.execution_count == 1
    plot = "plt.figure(figsize=(3, 2)).gca().plot([1, 2, 3]); plt.gcf().number"
    first, second = await box.run(plot), await box.run(plot)
    numbers = [next(o.data["text/plain"] for o in run.outputs if isinstance(o, Result)) for run in (first, second)]
    assert numbers == ["1", "1"]
    assert len(first.images) == 1
    assert first.images == second.images  # byte for byte


async def test_the_warm_pools_first_cell_leaves_nothing_behind(engine: Engine) -> None:
    """A warm-pool container's session runs a cell while it waits (so the first real one does not pay the fork's
    page copies): the code's first cell is still number 1, with an empty history, no results and no output."""
    await engine.warmed()
    assert engine.warm_pool()["ready"] > 0
    box = await engine.create()
    try:
        first = await box.run("_, __, ___, Out, len(In), [k for k in globals() if k[:1] == '_' and k[1:].isdigit()]")
        assert first.execution_count == 1
        assert [o.type for o in first.outputs] == ["result"]
        assert first.outputs[0].data["text/plain"] == "('', '', '', {}, 2, [])"
        second = await box.run("_1 is Out[1], len(In), get_ipython().execution_count")
        assert second.outputs[0].data["text/plain"] == "(True, 3, 3)"
    finally:
        await engine.destroy(box.id)


async def test_plt_show_displays_without_warnings(box: Sandbox) -> None:
    result = await box.run("import matplotlib.pyplot as plt\nplt.plot([3, 1]); plt.show()")
    assert result.ok
    assert len(result.images) == 1
    assert "Warning" not in result.stderr


async def test_reports_files_created_or_modified_in_the_workspace(box: Sandbox) -> None:
    box.upload("input.csv", b"a\n1\n")
    assert (await box.run("open('keep.txt', 'w').write('same')")).files[0].path == "/mnt/data/keep.txt"
    result = await box.run(
        "import os\nos.makedirs('out/deep', exist_ok=True)\n"
        "open('out/deep/r.txt', 'w').write('12345')\nopen('input.csv', 'a').write('2\\n')"
    )
    assert [(f.path, f.bytes) for f in result.files] == [
        ("/mnt/data/input.csv", 6), ("/mnt/data/out/deep/r.txt", 5),
    ]
    assert (await box.run("1")).files == []


async def test_a_workspace_too_big_to_scan_on_the_event_loop_is_scanned_whole(box: Sandbox) -> None:
    """The scan after a run is held to a few entries on the event loop; past them it runs again, whole, in a
    thread, so every change is still seen."""
    many = INLINE_SCAN_ENTRIES + 50
    made = await box.run(f"import os\nos.makedirs('many')\nfor i in range({many}): open(f'many/{{i}}.txt', 'w')")
    assert len(made.files) == many
    assert made.message is None  # nothing left out
    gone = await box.run("import shutil\nshutil.rmtree('many')")
    assert len(gone.deleted) == many


async def test_uploaded_files_are_in_the_working_directory(box: Sandbox) -> None:
    box.upload("/mnt/data/data.csv", b"x,y\n1,2\n")
    result = await box.run("import os, pandas as pd; print(os.getcwd()); int(pd.read_csv('data.csv').y.sum())")
    assert result.stdout == "/mnt/data\n"
    assert result.outputs[-1].data["text/plain"] == "2"
    assert box.download("data.csv") == b"x,y\n1,2\n"


async def test_timeout_interrupts_and_keeps_the_session(box: Sandbox) -> None:
    await box.run("x = 5")
    result = await box.run("import time\nwhile True: time.sleep(0.1)", timeout=1)
    assert result.status == "timeout"
    assert not result.restarted
    assert result.error is not None
    assert result.error.ename == "KeyboardInterrupt"
    assert (await box.run("x")).outputs[-1].data["text/plain"] == "5"


async def test_code_that_ignores_the_interrupt_is_restarted_with_its_files(box: Sandbox) -> None:
    await box.run("x = 5; open('kept.txt', 'w').write('still here')")
    result = await box.run("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(120)",
                           timeout=1)
    assert result.status == "timeout"
    assert result.restarted
    assert "restarted" in (result.message or "")
    after = await box.run("print(open('kept.txt').read()); x")
    assert after.stdout == "still here\n"
    assert after.error is not None
    assert after.error.ename == "NameError"


async def test_a_session_that_exits_is_restarted(box: Sandbox) -> None:
    result = await box.run("import os; os._exit(3)")
    assert result.status == "crashed"
    assert result.restarted
    assert (await box.run("1 + 1")).outputs[-1].data["text/plain"] == "2"


async def test_a_crash_whose_new_session_cannot_start_is_a_result_and_the_next_run_retries(box: Sandbox) -> None:
    """The code ran, so its answer is a result (an error would be retried and run it twice); the container keeps
    its files and starts a session on its next execution."""
    await box.run("open('/mnt/data/kept.txt', 'w').write('kept')")
    spawner = box._spawn

    async def refused() -> None:
        raise SandboxFailure("no template")

    box._spawn = refused
    crashed = await box.run("import os; os._exit(3)")
    assert crashed.status == "crashed"
    assert not crashed.restarted
    assert "a new session could not be started (no template)" in (crashed.message or "")
    box._spawn = spawner
    again = await box.run("open('/mnt/data/kept.txt').read()")
    assert again.status == "ok"
    assert again.outputs[-1].data["text/plain"] == "'kept'"


async def test_explicit_interrupt(box: Sandbox) -> None:
    async def interrupt_soon() -> None:
        await asyncio.sleep(0.5)
        box.interrupt()

    task = asyncio.create_task(interrupt_soon())
    result = await box.run("import time; time.sleep(30)", timeout=20)
    await task
    assert result.status == "error"
    assert result.error is not None
    assert result.error.ename == "KeyboardInterrupt"


async def test_output_beyond_the_cap_is_truncated_with_a_marker(box: Sandbox) -> None:
    result = await box.run("import sys\nfor _ in range(3000): sys.stdout.write('x' * 1000 + '\\n')")
    assert result.ok
    assert len(result.stdout.encode()) <= box.limits.output_limit
    assert "[output truncated:" in result.stderr
    assert (await box.run("print('fine')")).stdout == "fine\n"


async def test_input_does_not_hang(box: Sandbox) -> None:
    result = await box.run("input('name? ')", timeout=10)
    assert result.status == "error"


async def test_abandoned_stream_leaves_the_session_usable(box: Sandbox) -> None:
    stream = box.execute("import time\nfor i in range(100):\n    print(i, flush=True); time.sleep(0.05)")
    async for event in stream:
        if isinstance(event, Stream):
            break
    await stream.aclose()
    result = await box.run("'next'")
    assert result.outputs[-1].data["text/plain"] == "'next'"


async def test_streaming_delivers_output_before_the_code_finishes(box: Sandbox) -> None:
    events = []
    async for event in box.execute("import time\nprint('early', flush=True)\ntime.sleep(1)\nprint('late')"):
        events.append(event)
    assert isinstance(events[-1], Finished)
    texts = [e.text for e in events if isinstance(e, Stream)]
    assert texts[0] == "early\n"  # flushed on its own, not batched with the late line
    assert "late\n" in "".join(texts)


async def test_restart_loses_variables_and_keeps_files(box: Sandbox) -> None:
    await box.run("y = 1; open('f.txt', 'w').write('x')")
    await box.restart()
    result = await box.run("import os; print(os.path.exists('f.txt')); y")
    assert result.stdout == "True\n"
    assert isinstance(result.outputs[-1], Error)


async def test_the_data_stack_is_installed_and_warm(box: Sandbox) -> None:
    warm = await box.run("import sys; sorted(m for m in ('numpy', 'pandas', 'matplotlib.pyplot') if m in sys.modules)")
    assert warm.outputs[-1].data["text/plain"] == "['matplotlib.pyplot', 'numpy', 'pandas']"
    modules = ["numpy", "pandas", "matplotlib", "scipy", "sympy", "sklearn", "statsmodels.api", "seaborn", "PIL",
               "openpyxl", "xlrd", "docx", "pptx", "pypdf", "reportlab", "bs4", "lxml", "networkx", "tabulate",
               "pyarrow"]
    result = await box.run("import importlib\n" + "\n".join(f"importlib.import_module({m!r})" for m in modules))
    assert result.ok, result.error and result.error.text


async def test_containers_are_independent_and_run_concurrently(engine: Engine) -> None:
    boxes = [await engine.create() for _ in range(3)]
    try:
        await asyncio.gather(*(b.run(f"v = {i}") for i, b in enumerate(boxes)))
        results = await asyncio.gather(*(b.run("import time; time.sleep(0.3); v") for b in boxes))
        assert [r.outputs[-1].data["text/plain"] for r in results] == ["0", "1", "2"]
        seeds = await asyncio.gather(*(b.run("import numpy; numpy.random.randint(1 << 30)") for b in boxes))
        assert len({r.outputs[-1].data["text/plain"] for r in seeds}) == 3  # reseeded after fork
    finally:
        for b in boxes:
            await engine.destroy(b.id)


async def test_stats_report_memory_and_processes(box: Sandbox) -> None:
    stats = box.stats()
    assert stats["alive"]
    assert stats["memory_bytes"] > 0
    assert stats["pids"] >= 2


async def test_rich_display_types(box: Sandbox) -> None:
    result = await box.run("from IPython.display import HTML, Markdown, display\n"
                           "display(HTML('<b>x</b>')); display(Markdown('*y*'))")
    assert [o.data.get("text/html") or o.data.get("text/markdown") for o in result.outputs
            if isinstance(o, Display)] == ["<b>x</b>", "*y*"]


async def test_a_long_session_keeps_its_results_without_ipythons_cache_warning(box: Sandbox) -> None:
    for n in range(1005):  # IPython's output cache holds 1000: past it, the oldest are forgotten
        result = await box.run(f"{n}")
        assert result.ok
        assert [type(o) for o in result.outputs] == [Result], result.outputs  # the value, and nothing else
    assert (await box.run("_")).outputs[-1].data["text/plain"] == "1004"
