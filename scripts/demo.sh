#!/usr/bin/env bash
# The README's first command: installs PostgreSQL if the demo needs it
# (scripts/setup.sh), then runs examples/leakdemo, which uses DATABASE_URL,
# else the local server, else a throwaway cluster of its own. Arguments go
# to the demo: scripts/demo.sh -http :8080 keeps it running with its live page.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh demo
exec go run ./examples/leakdemo "$@"
