#!/usr/bin/env bash
# Installs what the test suites use as real components: Debian's upstream Pushgateway (the
# compatibility oracle), Prometheus (real scraper), the Python client library, headless Chromium
# with its WebDriver and selenium (the status page's browser tests), and the container test bed's
# haproxy and docker-compose.
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

need_apt=()
[ -x /usr/bin/prometheus-pushgateway ] || need_apt+=(prometheus-pushgateway)
[ -x /usr/bin/prometheus ] || need_apt+=(prometheus)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The tests start their own gateways and Prometheus on ports they pick: the packaged services
  # must not start on the default ports. Debian's maintainer scripts ask policy-rc.d first
  # (invoke-rc.d, deb-systemd-invoke); exit 101 forbids the start. Only our own policy file, and
  # only for this install: one the administrator put there is left alone and in force.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# install-test-deps.sh: no service starts during its apt-get install\nexit 101\n' \
      | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
  if [ -n "$own_policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT
  fi
  # Not started on the next boot either; only the services of the packages installed here (a
  # prometheus or pushgateway the user runs, packaged or not, is never touched).
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for pkg in "${need_apt[@]}"; do
      $SUDO systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
    done
  fi
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c 'import prometheus_client' 2>/dev/null; then
  "$PY" -m pip install -q prometheus_client
fi
# The deployment examples' checks (cluster-tests/tests/deploy_examples.rs): strict Kubernetes
# schemas (it brings PyYAML, which the checks parse the manifests with) and kubectl's kustomize
# (Debian's kubernetes-client when no kubectl is there). promtool comes with prometheus above.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  "$PY" -m pip install -q kubernetes-validate
fi
if ! command -v kubectl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client
fi
if ! "$PY" -c 'import selenium' 2>/dev/null; then
  "$PY" -m pip install -q selenium
fi

# The container test bed's own tools (haproxy, docker-compose, jq for the bench script).
"$(dirname "$0")/install-testbed-deps.sh"
if ! command -v jq >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends jq || true
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
