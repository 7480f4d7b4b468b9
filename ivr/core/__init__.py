"""The pure core: the escalation engine, the notification conversation, on-call arithmetic and phone
numbers. No I/O: no database, no web, no asyncio, no clock (time comes in as ``now``)."""
