#!/usr/bin/env bash
# Installs iproute2 (`ip`, Debian's package) when it is missing: the multi-host tests
# (test/e2e/multihost.e2e.test.ts) make network namespaces with veth links as "hosts"
# (test/helpers/netns.ts), and `unshare` (util-linux, always on Debian) gives each host its own
# IPC namespace. Idempotent and instant when installed; `npm test` runs it first (pretest).
# Installing and the tests themselves need root. With --keep-going (npm test's pretest) a
# failure is reported and the script exits 0: the multi-host suite then skips, naming the cause.
set -euo pipefail
KEEP_GOING=0
[ "${1:-}" = "--keep-going" ] && KEEP_GOING=1

fail() {
  echo "setup-netns: $*" >&2
  if [ "$KEEP_GOING" -eq 1 ]; then
    echo "setup-netns: continuing: test/e2e/multihost.e2e.test.ts will skip (no network namespaces)" >&2
    exit 0
  fi
  exit 1
}

. "$(dirname "$0")/lib-apt.sh"
have_ip() { command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; }
apt_install setup-netns iproute2 have_ip
