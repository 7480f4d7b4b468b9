"""The SIP test harness: sipp scenarios (scenarios/) and the parties driving them (parties.py)."""
