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

for d in /usr/lib/x86_64-linux-gnu/faketime /usr/lib/aarch64-linux-gnu/faketime /usr/lib/faketime /usr/local/lib/faketime; do
  [ -e "$d/libfaketimeMT.so.1" ] && exit 0
done
echo "setup-faketime: libfaketime is missing; installing Debian's faketime package" >&2
if [ "$(id -u)" -ne 0 ]; then
  fail "not root: install it yourself (apt-get install -y faketime)"
fi
if ! command -v apt-get >/dev/null 2>&1; then
  fail "no apt-get on this machine: install libfaketime"
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends faketime >/dev/null; }; then
  fail "apt-get install faketime failed (see above)"
fi
echo "setup-faketime: installed $(dpkg-query -W -f='${Package} ${Version}' libfaketime 2>/dev/null || echo libfaketime)" >&2
