"""Tests of Hotline's Twilio shell, against FakeTwilio (harness.py), a simulator of Twilio's voice platform."""
