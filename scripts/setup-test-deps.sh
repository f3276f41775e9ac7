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

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

echo "setup-test-deps: $CHROMIUM is missing; installing Debian's chromium package" >&2
if [ "$(id -u)" -ne 0 ]; then
  fail "not root: install it yourself (apt-get install -y chromium) or set CHROMIUM_PATH"
fi
if ! command -v apt-get >/dev/null 2>&1; then
  fail "no apt-get on this machine: install chromium and set CHROMIUM_PATH"
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  fail "apt-get install chromium failed (see above)"
fi
if [ ! -x "$CHROMIUM" ]; then
  fail "chromium installed but $CHROMIUM is not there"
fi
echo "setup-test-deps: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)" >&2
