"""Twilio, Hotline's optional second provider: what talks to Twilio itself.

Beside ``ivr.asterisk`` in the layers: the signature check of its webhooks, the TwiML Hotline
returns, and its REST API (call prices, notification calls, number provisioning), through the
twilio SDK. The shell that runs the escalation engine over the webhooks is ``ivr.shells.twilio``.
"""
