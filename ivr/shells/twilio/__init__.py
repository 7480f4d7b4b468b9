"""The Twilio shell: the same escalation engine over TwiML webhooks (``voice``).

Its place in the layers: like ``ivr.shells.ari`` and ``ivr.shells.fastagi``, it turns its protocol's
traffic (signed webhooks) into the engine's events (``ivr.core.vocabulary``) and the engine's
commands into its protocol (TwiML), and records the engine's log updates through ``ivr.store``.
What talks to Twilio itself (signatures, the REST API) is ``ivr.twilio``. The composition root
(``ivr.main``) mounts its routes.
"""
