"""Parses text expositions with the Python client's own parser (prometheus_client.parser), for
tests that check what pushgate renders with a parser that is not pushgate's.

Reads one JSON object a line on stdin, {"text": "<exposition>"}, and answers each with one JSON
line: {"ok": true, "families": [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}]}
or {"ok": false, "error": "..."}. Values are Python's repr of the float ('nan', 'inf', '1.5'),
which Rust's f64 parser reads back exactly (JSON has no NaN or infinities). One process serves a
whole property test, so the interpreter starts once.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def parse(text):
    families = []
    for family in text_string_to_metric_families(text):
        families.append({
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": dict(s.labels), "value": repr(float(s.value))}
                for s in family.samples
            ],
        })
    return families


def main():
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"ok": True, "families": parse(request["text"])}
        except Exception as e:  # the parser raises ValueError and friends on bad input
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
