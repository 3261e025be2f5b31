# rounds.sh: sourced by the bench scripts that run a server per measurement, in rounds.
#
#   rounds_setup NAME   sources stop.sh; sets SERVER_PID (the running server, stopped on exit),
#                       RESULTS (a temporary file, removed on exit) and TICKS (clock ticks/s).
#   MEDIAN_AWK          an awk function `median(arr, n)` to put in front of an awk program.
# shellcheck source=stop.sh
source "$(dirname "${BASH_SOURCE[0]}")/stop.sh"

rounds_setup() {
    SERVER_PID=""
    RESULTS=$(mktemp -t "pushgate-$1.XXXXXX")
    TICKS=$(getconf CLK_TCK)
    trap 'stop_process "$SERVER_PID"; rm -f "$RESULTS"' EXIT
    trap 'exit 130' INT TERM
}

# shellcheck disable=SC2034 # used by the scripts that source this file
MEDIAN_AWK='
    function median(arr, n,   i, j, t) {
        for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
        return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }'
