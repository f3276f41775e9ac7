#!/usr/bin/env bash
# Test dependencies that npm cannot install: Debian's chromium, for the status page's browser
# test (test/e2e/status-page.e2e.test.ts drives it with playwright-core). Idempotent and fast
# when already installed; `npm test` runs it first (pretest). Installing needs root (CI runs
# as root). When chromium is missing and cannot be installed, this fails with a message:
# the browser test never skips silently.
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

echo "setup-test-deps: $CHROMIUM is missing; installing Debian's chromium package" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-test-deps: not root: install it yourself (apt-get install -y chromium) or set CHROMIUM_PATH" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-test-deps: no apt-get on this machine: install chromium and set CHROMIUM_PATH" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  echo "setup-test-deps: apt-get install chromium failed (see above)" >&2
  exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "setup-test-deps: chromium installed but $CHROMIUM is not there" >&2
  exit 1
fi
echo "setup-test-deps: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)" >&2
