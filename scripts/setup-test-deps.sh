#!/usr/bin/env bash
# Test dependencies that npm cannot install: Debian's chromium, for the status page's browser
# test (test/e2e/status-page.e2e.test.ts drives it with playwright-core). Idempotent and fast
# when already installed; `npm test` runs it first (pretest). Installing needs root (CI runs
# as root). When chromium is missing and cannot be installed, this fails with a message:
# the browser test never skips silently. With --keep-going (npm test's pretest) it says so
# and exits 0, so the other suites still run; the browser test then fails, naming this script.
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
KEEP_GOING=0
[ "${1:-}" = "--keep-going" ] && KEEP_GOING=1

fail() {
  echo "setup-test-deps: $*" >&2
  if [ "$KEEP_GOING" -eq 1 ]; then
    echo "setup-test-deps: continuing without chromium: test/e2e/status-page.e2e.test.ts will FAIL" >&2
    exit 0
  fi
  exit 1
}

. "$(dirname "$0")/lib-apt.sh"
have_chromium() { [ -x "$CHROMIUM" ]; }
apt_install setup-test-deps chromium have_chromium
