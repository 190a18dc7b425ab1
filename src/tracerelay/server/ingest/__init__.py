"""Ingest: request bodies (SDK batches, streamed events, OTLP) turned into records to store."""
