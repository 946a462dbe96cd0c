#!/usr/bin/env bash
# System packages the test suite needs: headless Chromium (report browser test) and
# iproute2 + util-linux (`ip`, `ss`, `unshare`: private network namespaces for the
# multi-node, S3, Ray Jobs and loopback tests).
# Installs only what is missing, only as root with apt (CI and dev boxes of this kind);
# elsewhere it says what to install and the tests that need it skip.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v ip >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
[ "${#missing[@]}" = "0" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-system-deps: installed ${missing[*]}" >&2
else
  echo "install-system-deps: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" \
       "to run the browser and network-namespace tests" >&2
fi
