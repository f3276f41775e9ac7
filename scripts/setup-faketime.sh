#!/usr/bin/env bash
# Installs libfaketime (Debian's `faketime` package, which brings `libfaketime`) when it is
# missing: the clock-skew test (test/e2e/clock-skew.e2e.test.ts) runs a namespace host's
# processes with LD_PRELOAD=libfaketime and FAKETIME=+3s, a host whose clock is 3 s ahead.
# Idempotent and instant when installed; `npm test` runs it first (pretest). Installing needs
# root. With --keep-going (npm test's pretest) a failure is reported and the script exits 0:
# the clock-skew test then skips, naming the cause.
set -euo pipefail
KEEP_GOING=0
[ "${1:-}" = "--keep-going" ] && KEEP_GOING=1

fail() {
  echo "setup-faketime: $*" >&2
  if [ "$KEEP_GOING" -eq 1 ]; then
    echo "setup-faketime: continuing: test/e2e/clock-skew.e2e.test.ts will skip (no libfaketime)" >&2
    exit 0
  fi
  exit 1
}

. "$(dirname "$0")/lib-apt.sh"
have_libfaketime() {
  local d
  for d in /usr/lib/x86_64-linux-gnu/faketime /usr/lib/aarch64-linux-gnu/faketime /usr/lib/faketime /usr/local/lib/faketime; do
    [ -e "$d/libfaketimeMT.so.1" ] && return 0
  done
  return 1
}
apt_install setup-faketime faketime have_libfaketime
