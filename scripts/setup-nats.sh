#!/usr/bin/env bash
# Installs nats-server (Debian's package) when it is missing: the NATS transport's tests start
# one on a free port (test/helpers/nats-server.ts). Idempotent and instant when installed.
# Needs root (or sudo) only when it installs. `npm test` runs it through `pretest`.
set -euo pipefail
. "$(dirname "$0")/lib-apt.sh"
fail() {
  echo "setup-nats: $*" >&2
  exit 1
}
have_nats() { command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ]; }
apt_install setup-nats nats-server have_nats
