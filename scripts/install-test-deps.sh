#!/usr/bin/env bash
# Installs what the test suites use as real components: Debian's upstream Pushgateway (the
# compatibility oracle), Prometheus (real scraper), the Python client library, headless Chromium
# with its WebDriver and selenium (the status page's browser tests), and the container test bed's
# haproxy and docker-compose.
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
# shellcheck source=apt-install-no-start.sh
. "$(dirname "$0")/apt-install-no-start.sh"

need_apt=()
[ -x /usr/bin/prometheus-pushgateway ] || need_apt+=(prometheus-pushgateway)
[ -x /usr/bin/prometheus ] || need_apt+=(prometheus)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install_no_start "${need_apt[@]}"
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
