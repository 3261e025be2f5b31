#!/usr/bin/env python3
"""Checks of the deployment examples (docs/examples) that need their YAML parsed, run by
cluster-tests/tests/deploy_examples.rs, one check per call:

    deploy_examples.py CHECK FILE...

restricted  every pod template meets the Pod Security "restricted" profile, and has a read-only
            root file system
placement   a StatefulSet's pods never share a Kubernetes node (required anti-affinity on the
            hostname, or a DoNotSchedule spread of skew 1 over it), and a PDB keeps at most R-1
            down
lifecycle   startup, liveness and readiness probes on the right paths; the grace period covers
            --cluster.drain-period + --cluster.shutdown-timeout + SNAPSHOT_ALLOWANCE
domain      RENDERED RAW...: no hard-coded cluster.local in the RAW manifests; in RENDERED (their
            kustomize output) the peer name's $(CLUSTER_DOMAIN) comes from a ConfigMap it holds
operator    ServiceMonitor and PodMonitor (no schema in kubernetes-validate): their fields and
            their selectors against the Services and pods of the other files
compose     docker-compose: no `version:` key, stop_grace_period covers drain + hand-over +
            SNAPSHOT_ALLOWANCE for every pushgate service
scrape      checks the kubernetes_sd_configs of the scrape config file the ConfigMap carries and
            prints the file with them swapped for file_sd_configs, for promtool check config:
            Debian's promtool is built without Kubernetes discovery and refuses the key

Each prints what it checked and exits 1 with every problem found.
"""
import re
import sys

import yaml

# Time left for the final snapshot after the drain and the hand-over (a snapshot of a large
# store takes seconds; this keeps a margin the tests require of every example).
SNAPSHOT_ALLOWANCE = 10

PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)


def load(files):
    docs = []
    for f in files:
        with open(f) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    return docs


def name(d):
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"


def pod_templates(docs):
    for d in docs:
        if d.get("kind") in ("StatefulSet", "Deployment", "DaemonSet", "Job", "ReplicaSet"):
            yield d, d["spec"]["template"]
        elif d.get("kind") == "Pod":
            yield d, d


def seconds(value):
    """A Go duration of h/m/s/ms parts, as pushgate's flags take them."""
    total, rest = 0.0, value
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        rest = rest.replace(num + unit, "", 1)
    if rest or not value:
        raise ValueError(f"not a duration: {value!r}")
    return total


def flag(args, name):
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def check_restricted(docs):
    """The Pod Security Standards' "restricted" profile (and the baseline it includes), field by
    field, plus readOnlyRootFilesystem."""
    found = False
    for d, tpl in pod_templates(docs):
        found = True
        spec, n = tpl["spec"], name(d)
        psc = spec.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                problem(f"{n}: {host}")
        for v in spec.get("volumes", []):
            kinds = set(v) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                problem(f"{n}: volume {v['name']} of type {kinds - RESTRICTED_VOLUMES}")
        if psc.get("runAsUser") == 0:
            problem(f"{n}: pod runAsUser 0")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            cn = f"{n} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("privileged"):
                problem(f"{cn}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problem(f"{cn}: allowPrivilegeEscalation must be false")
            caps = sc.get("capabilities", {})
            if "ALL" not in caps.get("drop", []):
                problem(f"{cn}: capabilities must drop ALL")
            if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
                problem(f"{cn}: adds capabilities {caps['add']}")
            if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
                problem(f"{cn}: runAsNonRoot must be true (pod or container)")
            if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
                problem(f"{cn}: runAsUser must be a non-zero uid (the image's 65534)")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problem(f"{cn}: seccompProfile must be RuntimeDefault or Localhost, is {seccomp}")
            if sc.get("readOnlyRootFilesystem") is not True:
                problem(f"{cn}: readOnlyRootFilesystem must be true")
            for p in c.get("ports", []):
                if p.get("hostPort"):
                    problem(f"{cn}: hostPort {p['hostPort']}")
        print(f"restricted: checked {n}")
    if not found:
        problem("no pod template found")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_placement(docs):
    for d, tpl in pod_templates(docs):
        n, spec, labels = name(d), tpl["spec"], tpl["metadata"]["labels"]
        anti = spec.get("affinity", {}).get("podAntiAffinity", {})
        per_host = any(
            t.get("topologyKey") == "kubernetes.io/hostname"
            and selects(t.get("labelSelector", {}).get("matchLabels"), labels)
            for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution", []))
        per_host = per_host or any(
            t.get("topologyKey") == "kubernetes.io/hostname" and t.get("maxSkew") == 1
            and t.get("whenUnsatisfiable") == "DoNotSchedule"
            and selects(t.get("labelSelector", {}).get("matchLabels"), labels)
            for t in spec.get("topologySpreadConstraints", []))
        if not per_host:
            problem(f"{n}: two pods (two copies of a group) may share a Kubernetes node")
        args = spec["containers"][0].get("args", [])
        r = int(flag(args, "cluster.replication-factor") or 2)
        pdbs = [p for p in docs if p.get("kind") == "PodDisruptionBudget"
                and selects(p["spec"]["selector"].get("matchLabels"), labels)]
        if not pdbs:
            problem(f"{n}: no PodDisruptionBudget selects its pods")
        for p in pdbs:
            if p["spec"].get("maxUnavailable", 10**6) > r - 1:
                problem(f"{name(p)}: maxUnavailable above R-1 = {r - 1}")
        print(f"placement: checked {n} (R={r}, {len(pdbs)} PDB)")


def grace_needed(args, where):
    drain, shutdown = flag(args, "cluster.drain-period"), flag(args, "cluster.shutdown-timeout")
    if drain is None or shutdown is None:
        problem(f"{where}: write --cluster.drain-period and --cluster.shutdown-timeout out "
                "(the grace period depends on them)")
        return None
    return seconds(drain) + seconds(shutdown) + SNAPSHOT_ALLOWANCE


def check_lifecycle(docs):
    for d, tpl in pod_templates(docs):
        n, spec = name(d), tpl["spec"]
        c = spec["containers"][0]
        want = {"startupProbe": "/-/healthy", "livenessProbe": "/-/healthy",
                "readinessProbe": "/-/ready"}
        for probe, path in want.items():
            got = c.get(probe, {}).get("httpGet", {}).get("path")
            if got != path:
                problem(f"{n}: {probe} must GET {path}, is {got}")
        needed = grace_needed(c.get("args", []), n)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if needed is not None and grace <= needed:
            problem(f"{n}: terminationGracePeriodSeconds {grace} must exceed drain + "
                    f"hand-over + {SNAPSHOT_ALLOWANCE} s for the snapshot = {needed:g}")
        print(f"lifecycle: checked {n} (grace {grace} s, needs more than {needed} s)")


def check_domain(files, docs):
    for f in files:
        with open(f) as fh:
            if "cluster.local" in re.sub(r"#.*", "", fh.read()):
                problem(f"{f}: cluster.local hard-coded (outside comments)")
    maps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    for d, tpl in pod_templates(docs):
        c = tpl["spec"]["containers"][0]
        peers = [a for a in c.get("args", []) if a.startswith("--cluster.peer=")]
        if not peers or not all("$(CLUSTER_DOMAIN)" in p for p in peers):
            problem(f"{name(d)}: --cluster.peer should name the Service with $(CLUSTER_DOMAIN)")
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("CLUSTER_DOMAIN", {}).get("valueFrom", {}).get("configMapKeyRef", {})
        cm = maps.get(ref.get("name"))
        value = cm and cm.get("data", {}).get(ref.get("key"))
        if not value:
            problem(f"{name(d)}: CLUSTER_DOMAIN must come from a ConfigMap of this input: {ref}")
        print(f"domain: {name(d)} peers {peers}, CLUSTER_DOMAIN={value!r}")


RELABEL_KEYS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement",
                "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                   "lowercase", "uppercase", "keepequal", "dropequal"}


def check_relabelings(where, items):
    for r in items or []:
        if set(r) - RELABEL_KEYS:
            problem(f"{where}: unknown relabeling fields {set(r) - RELABEL_KEYS}")
        if r.get("action", "replace").lower() not in RELABEL_ACTIONS:
            problem(f"{where}: unknown relabeling action {r.get('action')}")
        if "regex" in r:
            re.compile(r["regex"])


ENDPOINT_KEYS = {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                 "relabelings", "metricRelabelings", "params", "tlsConfig"}


# Where each node serves its own metrics without the groups: the per-node jobs scrape it, so a
# per-node scrape neither builds the merged view nor fails when the node's peers do.
NODE_METRICS_PATH = "/-/node-metrics"


def check_operator(docs):
    monitors = [d for d in docs if d.get("apiVersion") == "monitoring.coreos.com/v1"]
    kinds = {d["kind"] for d in monitors}
    if not {"ServiceMonitor", "PodMonitor"} <= kinds:
        problem(f"expected a ServiceMonitor and a PodMonitor, found {kinds}")
    services = [d for d in docs if d.get("kind") == "Service"]
    pods = [tpl for _, tpl in pod_templates(docs)]
    for m in monitors:
        n, spec = name(m), m.get("spec", {})
        if set(spec) - {"selector", "endpoints", "podMetricsEndpoints", "jobLabel",
                        "namespaceSelector"}:
            problem(f"{n}: unknown spec fields {set(spec)}")
        sel = spec.get("selector", {}).get("matchLabels")
        key = "endpoints" if m["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
        endpoints = spec.get(key) or []
        if not endpoints:
            problem(f"{n}: no {key}")
        for e in endpoints:
            if set(e) - ENDPOINT_KEYS:
                problem(f"{n}: unknown endpoint fields {set(e) - ENDPOINT_KEYS}")
            check_relabelings(n, e.get("relabelings"))
            check_relabelings(n, e.get("metricRelabelings"))
            if m["kind"] == "ServiceMonitor":
                hits = [s for s in services if selects(sel, s["metadata"].get("labels", {}))]
                ports = [p for s in hits for p in s["spec"]["ports"] if p.get("name") == e["port"]]
                if len(hits) != 1 or not ports:
                    problem(f"{n}: selects {[name(s) for s in hits]}, want the one Service "
                            f"with port {e['port']}")
            else:
                if e.get("path") != NODE_METRICS_PATH:
                    problem(f"{n}: scrapes {e.get('path', '/metrics')}, want {NODE_METRICS_PATH}")
                hits = [p for p in pods if selects(sel, p["metadata"]["labels"])]
                ports = [p for t in hits for c in t["spec"]["containers"]
                         for p in c.get("ports", []) if p.get("name") == e["port"]]
                if not hits or not ports:
                    problem(f"{n}: selects no pod with a port named {e['port']}")
        print(f"operator: checked {n}")


def check_compose(docs):
    (d,) = docs
    if "version" in d:
        problem("docker-compose: obsolete `version:` key")
    nodes = {k: s for k, s in d["services"].items() if "pushgate" in str(s.get("image", ""))}
    if not nodes:
        problem("docker-compose: no pushgate service")
    for k, s in nodes.items():
        grace = seconds(s.get("stop_grace_period", "10s"))
        needed = grace_needed(s.get("command", []), k)
        if needed is not None and grace <= needed:
            problem(f"{k}: stop_grace_period {grace:g} s must exceed drain + hand-over + "
                    f"{SNAPSHOT_ALLOWANCE} s for the snapshot = {needed:g}")
        print(f"compose: {k} grace {grace:g} s, needs more than {needed} s")


def main():
    check, files = sys.argv[1], sys.argv[2:]
    docs = load(files)
    if check == "scrape":
        (cm,) = [d for d in docs if d.get("kind") == "ConfigMap"]
        (text,) = cm["data"].values()
        config = yaml.safe_load(text)
        if set(config) != {"scrape_configs"}:
            problem(f"the scrape config file holds {set(config)}: only scrape_configs can be "
                    "included with scrape_config_files")
        for job in config.get("scrape_configs", []):
            if job["job_name"] == "pushgate-nodes" and job.get("metrics_path") != NODE_METRICS_PATH:
                problem(f"pushgate-nodes scrapes {job.get('metrics_path', '/metrics')}, want "
                        f"{NODE_METRICS_PATH}")
            for sd in job.pop("kubernetes_sd_configs", []):
                if set(sd) - {"role", "namespaces", "selectors"} or sd.get("role") != "pod":
                    problem(f"{job['job_name']}: kubernetes_sd_configs {sd}")
                if not sd.get("namespaces", {}).get("names"):
                    problem(f"{job['job_name']}: no namespace named")
                for r in job.get("relabel_configs", []):
                    for label in r.get("source_labels", []):
                        if label.startswith("__meta_") and not label.startswith(
                                "__meta_kubernetes_pod_"):
                            problem(f"{job['job_name']}: {label} is not a pod role label")
                job.setdefault("file_sd_configs", []).append({"files": ["pods.json"]})
        if PROBLEMS:
            print("\n".join(["PROBLEMS:"] + PROBLEMS))
            sys.exit(1)
        sys.stdout.write(yaml.safe_dump(config))
        return
    {"restricted": check_restricted, "placement": check_placement,
     "lifecycle": check_lifecycle, "operator": check_operator, "compose": check_compose,
     "domain": lambda docs: check_domain(files[1:], load(files[:1]))}[check](docs)
    if PROBLEMS:
        print("\n".join(["PROBLEMS:"] + PROBLEMS))
        sys.exit(1)


if __name__ == "__main__":
    main()
