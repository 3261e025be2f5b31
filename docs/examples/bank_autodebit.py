#!/usr/bin/env python3
"""A sample "function": one run of a bank's auto-debit batch job, pushing its results to a
Pushgateway (pushgate) at the end of the run, the way a Cloud Function, a Lambda or a cron job does.

    PUSHGATEWAY=lb:9091 python3 bank_autodebit.py --worker worker-3 --run 7

Each run debits every account of its worker once; a debit fails when the balance would go below
the overdraft limit. It pushes (HTTP PUT, replacing the previous run's group) with the grouping key
{job="bank_autodebit", instance=<worker>}:

    bank_account_balance{account_id}   gauge, balance after the run
    bank_debits_successful_total       counter, successful debits of this run
    bank_debits_failed_total           counter, failed debits of this run
    bank_autodebit_last_run_number     gauge, the run number

and prints one JSON line with what it pushed (the end-to-end test compares it with what reaches
the long-term store). Balances are a pure function of (worker, run, accounts), so a run can be
replayed. Exit status 1 when the push is refused.
"""
import argparse
import json
import os
import sys
import zlib

from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway


def balances_after(worker, run, accounts):
    """The accounts of `worker` after `run` runs: each starts with a worker-specific balance and
    pays a fixed instalment per run unless that would overdraw it by more than 100."""
    out, ok, failed = {}, 0, 0
    for a in range(accounts):
        account = f"{worker}-acc-{a}"
        seed = zlib.crc32(account.encode())
        balance = 500 + seed % 1000 + 0.25 * a
        instalment = 50 + seed % 200
        for r in range(1, run + 1):
            if balance - instalment >= -100:
                balance -= instalment
                if r == run:
                    ok += 1
            elif r == run:
                failed += 1
        out[account] = round(balance, 2)
    return out, ok, failed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateway", default=os.environ.get("PUSHGATEWAY", "localhost:9091"))
    p.add_argument("--worker", default="worker-1")
    p.add_argument("--run", type=int, default=1)
    p.add_argument("--accounts", type=int, default=5)
    args = p.parse_args()

    balances, ok, failed = balances_after(args.worker, args.run, args.accounts)
    registry = CollectorRegistry()
    balance = Gauge("bank_account_balance", "Account balance after the auto-debit run",
                    ["account_id"], registry=registry)
    for account, value in balances.items():
        balance.labels(account_id=account).set(value)
    Counter("bank_debits_successful", "Successful auto-debits of the run", registry=registry).inc(ok)
    Counter("bank_debits_failed", "Failed auto-debits of the run", registry=registry).inc(failed)
    Gauge("bank_autodebit_last_run_number", "Number of the run", registry=registry).set(args.run)
    try:
        push_to_gateway(args.gateway, job="bank_autodebit",
                        grouping_key={"instance": args.worker}, registry=registry, timeout=10)
    except Exception as e:  # the function's own error reporting: one line, non-zero exit
        print(json.dumps({"error": str(e), "worker": args.worker, "run": args.run}))
        return 1
    print(json.dumps({"worker": args.worker, "run": args.run, "balances": balances,
                      "ok": ok, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
