"""Glue for web frameworks: `zag_async.contrib.fastapi` and `zag_async.contrib.aiohttp`."""
