"""What Cellbox does, independent of HTTP: files, containers, execution, keys, expiry."""
