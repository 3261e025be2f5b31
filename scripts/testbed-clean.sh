#!/usr/bin/env bash
# Removes everything the container test bed (cluster-tests) created: containers and networks
# labelled pushgate-testbed (all runs, also of other checkouts: run it when no test is running),
# the compose example test's projects (pgbed<pid>) and images (pgbed-*, also the Dockerfile test's),
# and with --images the pushgate-testbed images. A test removes its own on success and failure;
# this is for runs killed before their cleanup ran.
set -euo pipefail
ids=$(docker ps -aq --filter label=pushgate-testbed)
[ -z "$ids" ] || docker rm -f -v $ids >/dev/null
nets=$(docker network ls -q --filter label=pushgate-testbed)
[ -z "$nets" ] || docker network rm $nets >/dev/null
echo "removed $(echo $ids | wc -w) containers, $(echo $nets | wc -w) networks"
# The compose example's test runs as project pgbed<pid>, with images pgbed-*:<pid>.
cids=$(docker ps -a --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | awk '$2 ~ /^pgbed[0-9]+$/ {print $1}')
[ -z "$cids" ] || docker rm -f -v $cids >/dev/null
cnets=$(docker network ls --format '{{.Name}}' | grep -E '^pgbed[0-9]+_' || true)
[ -z "$cnets" ] || docker network rm $cnets >/dev/null
cvols=$(docker volume ls -q | grep -E '^pgbed[0-9]+_' || true)
[ -z "$cvols" ] || docker volume rm $cvols >/dev/null
cimgs=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^pgbed-(pushgate|haproxy|prometheus|dockerfile):' || true)
[ -z "$cimgs" ] || docker rmi -f $cimgs >/dev/null
echo "removed $(echo $cids | wc -w) compose-example containers, $(echo $cimgs | wc -w) of its images"
if [ "${1:-}" = "--images" ]; then
  imgs=$(docker images -q pushgate-testbed | sort -u)
  [ -z "$imgs" ] || docker rmi -f $imgs >/dev/null
  echo "removed $(echo $imgs | wc -w) images"
fi
