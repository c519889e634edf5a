"""A small asyncio HTTP/1.1 server shared by the resolver, metrics and discovery endpoints."""
