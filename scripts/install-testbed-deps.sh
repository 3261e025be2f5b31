#!/usr/bin/env bash
# Installs what the container test bed (cluster-tests: testbed, pipeline, compose example) uses
# besides scripts/install-test-deps.sh: Debian's haproxy (the load balancer), prometheus (the
# scraper, the long-term store and promtool) and docker-compose. The Docker engine itself is not
# installed here: without one, the container tests skip with a message.
# The packaged haproxy and prometheus services are neither started nor enabled (the tests start
# their own on ports they pick); a haproxy or prometheus already there is left alone.
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
# shellcheck source=apt-install-no-start.sh
. "$(dirname "$0")/apt-install-no-start.sh"
need=()
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
# docs/examples/make-certs.sh (the compose example's mutual TLS).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt_install_no_start "${need[@]}"
fi
