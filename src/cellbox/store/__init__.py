"""Persistence: metadata in SQL (SQLite by default, PostgreSQL optional) and file bytes as blobs (on disk by default,
or in an S3-compatible store)."""
