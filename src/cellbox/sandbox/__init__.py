"""Host side of the sandbox: isolate, launch and talk to containers."""
