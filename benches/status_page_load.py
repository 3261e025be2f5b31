#!/usr/bin/env python3
"""Fills a Pushgateway-compatible server with N groups for benches/status-page.sh.

Usage: status_page_load.py HOST:PORT N

Group i: job="job-<i % 100>", instance="inst-<i>", three series (a gauge, a counter with HELP,
an untyped value). Eight threads with keep-alive connections; exits 1 on any refused push.
"""
import http.client
import sys
import threading

BODY = (
    "# HELP job_duration_seconds How long the last run took.\n"
    "# TYPE job_duration_seconds gauge\n"
    "job_duration_seconds 12.5\n"
    "# TYPE records_processed_total counter\n"
    "records_processed_total 1234\n"
    "job_last_success 1.7e9\n"
).encode()


def worker(addr, ids, errors):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    for i in ids:
        conn.request("PUT", f"/metrics/job/job-{i % 100}/instance/inst-{i}", BODY)
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 202):
            errors.append(f"group {i}: {r.status}")
            return


def main():
    addr, n = sys.argv[1], int(sys.argv[2])
    threads, errors = [], []
    for t in range(8):
        th = threading.Thread(target=worker, args=(addr, range(t, n, 8), errors))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    if errors:
        print("refused pushes: " + "; ".join(errors[:5]), file=sys.stderr)
        sys.exit(1)
    print(f"{addr}: {n} groups pushed", file=sys.stderr)


if __name__ == "__main__":
    main()
