#!/usr/bin/env bash
# Installs what the container test bed (cluster-tests: testbed, pipeline, compose example) uses
# besides scripts/install-test-deps.sh: Debian's haproxy (the load balancer), prometheus (the
# scraper, the long-term store and promtool) and docker-compose. The Docker engine itself is not
# installed here: without one, the container tests skip with a message.
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
need=()
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# docs/examples/make-certs.sh (the compose example's mutual TLS).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The tests start their own haproxy and Prometheus on ports they pick: the packaged services
  # must not start on the default ports (nor touch a haproxy the user runs). Debian's maintainer
  # scripts ask policy-rc.d first (invoke-rc.d, deb-systemd-invoke); exit 101 forbids the start.
  # Only our own policy file, and only for this install: one the administrator put there is left
  # alone and in force (as in scripts/install-test-deps.sh).
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# install-testbed-deps.sh: no service starts during its apt-get install\nexit 101\n' \
      | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  if [ -n "$own_policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT
  fi
  # Not started on the next boot either; only the services of the packages installed here (a
  # haproxy or prometheus the user runs, packaged or not, is never touched).
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for pkg in haproxy prometheus; do
      if [[ " ${need[*]} " == *" $pkg "* ]]; then
        $SUDO systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
      fi
    done
  fi
fi
