# Sourced by scripts/install-test-deps.sh and scripts/install-testbed-deps.sh (not run on its own).
#
# apt_install_no_start PKG...: apt-get install PKG... without starting their packaged services,
# and with those services disabled for the next boot. The tests start their own Prometheus,
# Pushgateway and haproxy on ports they pick: a packaged one would take the default ports.
# Debian's maintainer scripts ask policy-rc.d first (invoke-rc.d, deb-systemd-invoke); exit 101
# forbids the start. Only our own policy file, and only for this install: one the administrator
# put there is left alone and in force. Only the services of the packages installed here are
# disabled: a prometheus, pushgateway or haproxy the user runs, packaged or not, is never touched
# (an installed package is never passed here: the callers install only what is missing).
# Uses $SUDO (empty when root).
apt_install_no_start() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  local policy=/usr/sbin/policy-rc.d own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# pushgate test set-up: no service starts during its apt-get install\nexit 101\n' \
      | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "$@"
  if [ -n "$own_policy" ]; then
    $SUDO rm -f "$policy"
    trap - EXIT
  fi
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    local pkg
    for pkg in "$@"; do
      $SUDO systemctl disable --now "$pkg.service" >/dev/null 2>&1 || true
    done
  fi
}
