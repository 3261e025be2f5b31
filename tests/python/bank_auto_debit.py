"""The seed's serverless function, rewritten for an aggregating group: each invocation starts its
registry at zero, debits, and pushes to `<gateway>/aggregate` with the unmodified Python client.

usage: bank_auto_debit.py <gateway host:port> <worker number> <invocations>
Prints one line per invocation: `ACK <observed seconds>` when the gateway acknowledged the push,
`FAIL <error>` when it did not (so the test can count exactly what was acknowledged).
An invocation whose number is a multiple of 5 sends its push twice with the same
Idempotency-Key, as a client retrying after a lost answer would: it must count once.
"""
import sys

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import default_handler, push_to_gateway

gateway, worker, invocations = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def retried_with_key(key):
    """A handler that sends the push twice with one Idempotency-Key."""

    def handler(url, method, timeout, headers, data):
        headers = list(headers) + [("Idempotency-Key", key)]
        send = default_handler(url, method, timeout, headers, data)

        def twice():
            send()
            send()

        return twice

    return handler


def bank_auto_debit(invocation):
    registry = CollectorRegistry()
    successful = Counter("bank_auto_debit_successful", "Successful auto-debits",
                         registry=registry)
    duration = Histogram("bank_auto_debit_duration_seconds", "Time an auto-debit took",
                         buckets=(0.25, 0.5, 1.0), registry=registry)
    # Exact binary fractions, so the test can compare the summed _sum exactly.
    seconds = ((worker * 7 + invocation) % 8 + 1) * 0.125
    successful.inc()
    duration.observe(seconds)
    handler = default_handler
    if invocation % 5 == 0:
        handler = retried_with_key(f"worker-{worker}-invocation-{invocation}")
    push_to_gateway(f"{gateway}/aggregate", job="bank_auto_debit", registry=registry,
                    handler=handler)
    return seconds


for i in range(invocations):
    try:
        observed = bank_auto_debit(i)
        print(f"ACK {observed}", flush=True)
    except Exception as e:  # a refused or unanswered push is not counted by the test
        print(f"FAIL {e!r}", flush=True)
