"""Glue for web frameworks (`zag_async.contrib.fastapi`, `zag_async.contrib.aiohttp`)
and the operations UI (`zag_async.contrib.ui`)."""
