"""The web dashboard for operators and on-call teams, served by the API process under /dashboard
(docs/dashboard.md): server-rendered pages signed in with an API key, whose role and permissions apply
exactly as in the API, and the live calls pushed by server-sent events."""

from api.dashboard.views import Hooks, setup

__all__ = ["Hooks", "setup"]
