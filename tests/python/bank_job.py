"""The seed pattern: a bank auto-debit batch job pushing its results with the real prometheus_client.

usage: bank_job.py <gateway host:port>
Each phase prints PHASE <name> to stdout; the Rust test checks the gateway after the script is done.
"""
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import delete_from_gateway, push_to_gateway, pushadd_to_gateway

gateway = sys.argv[1]


def bank_registry(balances, ok, failed):
    registry = CollectorRegistry()
    balance = Gauge("bank_account_balance", "Account balance after the auto-debit run",
                    ["account_id"], registry=registry)
    for account, value in balances.items():
        balance.labels(account_id=account).set(value)
    Counter("bank_debits_successful_total", "Successful auto-debits", registry=registry).inc(ok)
    Counter("bank_debits_failed_total", "Failed auto-debits", registry=registry).inc(failed)
    return registry


# 1. push_to_gateway (PUT) with the default grouping key {job}.
push_to_gateway(gateway, job="bank_autodebit",
                registry=bank_registry({"acc-1": 1500.25, "acc-2": -20.5}, 7, 1))
print("PHASE push")

# 2. grouping_key with instance.
push_to_gateway(gateway, job="bank_autodebit", grouping_key={"instance": "worker-1"},
                registry=bank_registry({"acc-3": 42.0}, 3, 0))
print("PHASE instance")

# 3. grouping key value that needs base64 (contains '/').
push_to_gateway(gateway, job="bank_autodebit", grouping_key={"branch": "eu/west/1"},
                registry=bank_registry({"acc-4": 10.0}, 1, 2))
print("PHASE base64")

# 4. pushadd_to_gateway (POST): replaces only the pushed families of the {instance=worker-1} group.
registry = CollectorRegistry()
Gauge("bank_batch_last_success_unixtime", "Last successful run", registry=registry).set(1234567890)
pushadd_to_gateway(gateway, job="bank_autodebit", grouping_key={"instance": "worker-1"}, registry=registry)
print("PHASE pushadd")

# 5. delete_from_gateway removes a whole group.
push_to_gateway(gateway, job="bank_tmp", registry=bank_registry({"acc-9": 9.0}, 0, 0))
delete_from_gateway(gateway, job="bank_tmp")
print("PHASE delete")
