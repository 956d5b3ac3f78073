"""The shortest proof that a container runs code and keeps state."""

from cellbox.sandbox.sandbox import Sandbox


async def test_state_survives_between_executions(box: Sandbox) -> None:
    assert (await box.run("x = 1")).ok
    result = await box.run("x += 1; x")
    assert result.ok
    assert result.outputs[-1].data["text/plain"] == "2"
