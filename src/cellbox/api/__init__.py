"""The OpenAI-compatible HTTP API: thin routes over the services."""
