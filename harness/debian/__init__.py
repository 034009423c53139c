"""Debian's kernel packages: which exist (our own apt configuration), what a ``debian:`` spec
resolves to (pure), and fetching and unpacking them into the cache."""
