"""Cellbox: a self-hosted, OpenAI-compatible Code Interpreter."""

__version__ = "0.1.0"
