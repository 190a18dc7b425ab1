"""From a request body to rows: limits and decompression, validation, normalisation."""
