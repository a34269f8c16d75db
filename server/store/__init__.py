"""Embedded storage: SQLite tables with typed records, ciphertext blobs on disk, server-owned plaintext models."""
