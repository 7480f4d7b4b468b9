"""The lab Asterisk (placeholder until the lab lands)."""


def add_cli(sub):
    pass
