"""The Twilio shell (to come): the same escalation engine over TwiML webhooks.

Its place in the layers: like ``ivr.shells.ari`` and ``ivr.shells.fastagi``, it turns its protocol's
traffic (signed webhooks) into the engine's events (``ivr.core.vocabulary``) and the engine's
commands into its protocol (TwiML), and records the engine's log updates through ``ivr.store``.
The composition root (``ivr.main``) mounts its routes; nothing else may import it.
"""
