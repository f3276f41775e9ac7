#!/usr/bin/env bash
# Installs nats-server (Debian's package) when it is missing: the NATS transport's tests start
# one on a free port (test/helpers/nats-server.ts). Idempotent and instant when installed.
# Needs root (or sudo) only when it installs. `npm test` runs it through `pretest`.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1; then exit 0; fi
if [ -x /usr/sbin/nats-server ] || [ -x /usr/bin/nats-server ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup-nats: nats-server is missing; install it as root: apt-get install -y nats-server" >&2
    exit 1
  fi
fi
echo "setup-nats: installing nats-server from the Debian package" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || { echo "setup-nats: nats-server not found after install" >&2; exit 1; }
