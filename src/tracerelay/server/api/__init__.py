"""HTTP routers, one module per resource, and the auth dependency they share."""
