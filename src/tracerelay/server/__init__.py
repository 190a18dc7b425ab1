"""The tracerelay server (``tracerelay serve``): ingest, storage, queries, alerts and the web UI."""
