#!/usr/bin/env bash
# Removes everything the container test bed (cluster-tests) created: containers and networks
# labelled pushgate-testbed (all runs, also of other checkouts: run it when no test is running),
# and with --images the pushgate-testbed images. A test removes its own on success and failure;
# this is for runs killed before their cleanup ran.
set -euo pipefail
ids=$(docker ps -aq --filter label=pushgate-testbed)
[ -z "$ids" ] || docker rm -f -v $ids >/dev/null
nets=$(docker network ls -q --filter label=pushgate-testbed)
[ -z "$nets" ] || docker network rm $nets >/dev/null
echo "removed $(echo $ids | wc -w) containers, $(echo $nets | wc -w) networks"
if [ "${1:-}" = "--images" ]; then
  imgs=$(docker images -q pushgate-testbed | sort -u)
  [ -z "$imgs" ] || docker rmi -f $imgs >/dev/null
  echo "removed $(echo $imgs | wc -w) images"
fi
