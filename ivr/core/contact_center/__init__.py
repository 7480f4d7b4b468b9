"""The contact-center flows (to come): the IVR menu walk, the queue offer and its escalation, each a
pure flow on ``ivr.core.vocabulary`` (events in, commands out), like ``ivr.core.transitions`` and
``ivr.core.notification``, driven by the same shells. Pure: no database, no web, no asyncio
(``make test`` checks it with import-linter)."""
