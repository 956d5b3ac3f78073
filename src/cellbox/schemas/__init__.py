"""OpenAI wire models (pydantic): request bodies and response objects, no logic."""
