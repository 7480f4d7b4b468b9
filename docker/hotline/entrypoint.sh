#!/bin/sh
# The schema first (never implicit in `serve`; idempotent), then the API and the call services.
set -eu
hotline migrate
exec hotline serve "$@"
