"""Core subcommands: migrate, project, apikey, serve (filled in by the foundation work)."""


def add_cli(sub):
    pass
