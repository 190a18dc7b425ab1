"""Delivery: getting processed records to the server, whatever the network does.

The HTTP exporter encodes each record once (``encoding``), posts batches
(``transport``), decides what each answer means (``policy``), stops sending
during outages (``breaker``), adapts batch size and concurrency (``aimd``) and
keeps what could not be delivered on disk (``spool``) until it can be.
"""
