#!/usr/bin/env bash
# System packages the test suite needs: headless Chromium for the report browser test.
# Installs only what is missing, only as root with apt (CI and dev boxes of this kind);
# elsewhere it says what to install and the browser test skips.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  echo "install-system-deps: installed $(chromium --version 2>/dev/null || echo chromium)" >&2
else
  echo "install-system-deps: chromium not found; install it (Debian: apt-get install chromium) to run the report browser test" >&2
fi
