"""The seed's serverless function, rewritten for an aggregating group: each invocation starts its
registry at zero, debits, and pushes to `<gateway>/aggregate` with the unmodified Python client.

usage: bank_auto_debit.py <gateway host:port>[,<host:port>...] <worker number> <invocations> [keyed]
Prints one line per invocation: `ACK <observed seconds>` when the gateway acknowledged the push,
`FAIL <error>` when it did not (so the test can count exactly what was acknowledged).
An invocation whose number is a multiple of 5 sends its push twice with the same
Idempotency-Key, as a client retrying after a lost answer would: it must count once.
With `keyed` (a function meant to survive gateway failures), every invocation carries its own
Idempotency-Key and retries a push that failed (refused, unanswered, connection lost) with the
same key, for up to 30 seconds, each attempt through the next gateway of the list (as a client
of several gateway addresses fails over): a push that was added before its answer was lost
counts once.
"""
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import default_handler, push_to_gateway

gateways, worker, invocations = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3])
gateway = gateways[worker % len(gateways)]
keyed = len(sys.argv) > 4 and sys.argv[4] == "keyed"


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


def with_key(key):
    """A handler that sends the push with an Idempotency-Key."""

    def handler(url, method, timeout, headers, data):
        headers = list(headers) + [("Idempotency-Key", key)]
        return default_handler(url, method, timeout, headers, data)

    return handler


def push_until_acknowledged(registry, key):
    """Pushes with one Idempotency-Key until the gateway acknowledges it (at most 30 s)."""
    deadline = time.monotonic() + 30
    attempt = 0
    while True:
        gateway = gateways[(worker + attempt) % len(gateways)]
        attempt += 1
        try:
            push_to_gateway(f"{gateway}/aggregate", job="bank_auto_debit", registry=registry,
                            handler=with_key(key), timeout=10)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


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
    if keyed:
        push_until_acknowledged(registry, f"worker-{worker}-invocation-{invocation}")
        return seconds
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
