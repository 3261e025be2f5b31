//! The deployment files work as shipped: the Kubernetes manifests (docs/examples/kubernetes) pass
//! kubernetes-validate's strict schema as written and as kustomize renders them, meet the Pod
//! Security "restricted" profile, keep a group's copies on different Kubernetes nodes, give a
//! stopping pod the time its drain, hand-over and snapshot take, take the cluster domain from
//! configuration, and their prometheus-operator monitors select the pushgate Service and pods;
//! the compose example's grace period covers the same; the repository Dockerfile's runtime stage
//! builds offline from the local binary and runs as non-root on a read-only root file system.
//!
//! Needs python3 with PyYAML, kubernetes-validate (`pip install kubernetes-validate`), kubectl
//! (its built-in kustomize) and promtool; the Dockerfile test needs a Docker engine (or
//! PUSHGATE_SKIP_CONTAINER_TESTS=1). A missing tool fails the test saying what to install.
//! The YAML checks are in deploy_examples.py beside this file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster_tests::{free_port, http, require_docker, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s(file: &str) -> String {
    repo()
        .join("docs/examples/kubernetes")
        .join(file)
        .display()
        .to_string()
}

/// Runs a command; (success, stdout, stderr). `install` says what to install when it is missing.
fn run(cmd: &mut Command, install: &str) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run ({e}): {install}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Kubernetes example as `kubectl apply -k` would send it, written to a temp file.
fn rendered(dir: &Path) -> String {
    let (ok, out, err) = run(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(repo().join("docs/examples/kubernetes")),
        "install kubectl (its `kustomize` renders the example)",
    );
    assert!(ok, "kubectl kustomize: {err}");
    let path = dir.join("rendered.yaml");
    std::fs::write(&path, out).expect("temp file");
    path.display().to_string()
}

/// deploy_examples.py CHECK ARGS: fails the test with its output unless it passes.
fn check(what: &str, args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/deploy_examples.py");
    let (ok, out, err) = run(
        Command::new("python3").arg(script).arg(what).args(args),
        "install python3 with PyYAML",
    );
    assert!(ok, "{what}: {out}{err}");
    out
}

/// kubernetes-validate --strict over `files`: (success, its output).
fn kubernetes_validate(files: &[&str]) -> (bool, String) {
    let (ok, out, err) = run(
        Command::new("kubernetes-validate")
            .arg("--strict")
            .args(files),
        "pip install kubernetes-validate (scripts/install-test-deps.sh does)",
    );
    (ok, format!("{out}{err}"))
}

#[test]
fn kubernetes_manifests_pass_the_strict_schema_as_written_and_as_rendered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = rendered(dir.path());
    let files = [
        &*k8s("pushgate.yaml"),
        &*k8s("prometheus-scrape.yaml"),
        &*all,
    ];
    let (ok, out) = kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate --strict: {out}");
    for resource in [
        "service/pushgate-peers",
        "service/pushgate ",
        "statefulset/pushgate",
        "poddisruptionbudget/pushgate",
        "configmap/prometheus-pushgate-scrape",
        "configmap/pushgate-settings",
    ] {
        assert!(
            out.contains(&format!("passed for resource {resource}")),
            "{resource} should pass the strict schema: {out}"
        );
    }
    assert!(!out.contains("WARN"), "{out}");
}

#[test]
fn strict_validation_refuses_a_field_the_schema_does_not_have() {
    // The check above is only worth something if strict mode refuses what a typo makes.
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = std::fs::read_to_string(k8s("pushgate.yaml")).expect("manifest");
    let typo = manifest.replacen(
        "terminationGracePeriodSeconds:",
        "terminationGracePeriod:",
        1,
    );
    assert_ne!(typo, manifest);
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, typo).expect("temp file");
    let (ok, out) = kubernetes_validate(&[path.to_str().expect("utf-8")]);
    assert!(
        !ok,
        "strict validation should refuse terminationGracePeriod: {out}"
    );
}

#[test]
fn pods_meet_pod_security_restricted_with_a_read_only_root() {
    let dir = tempfile::tempdir().expect("temp dir");
    check("restricted", &[&rendered(dir.path())]);
}

#[test]
fn a_groups_copies_sit_on_different_kubernetes_nodes_and_the_pdb_allows_r_minus_1_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    check("placement", &[&rendered(dir.path())]);
}

#[test]
fn grace_periods_cover_drain_handover_and_snapshot_with_probes_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    check("lifecycle", &[&rendered(dir.path())]);
    let compose = repo().join("docs/examples/docker-compose.yml");
    check("compose", &[compose.to_str().expect("utf-8")]);
}

#[test]
fn the_cluster_domain_comes_from_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = rendered(dir.path());
    let raw = [
        k8s("pushgate.yaml"),
        k8s("prometheus-scrape.yaml"),
        k8s("prometheus-operator.yaml"),
    ];
    let mut args = vec![all.as_str()];
    args.extend(raw.iter().map(String::as_str));
    check("domain", &args);
    // And a cluster with another domain gets it: the ConfigMap kustomize generates carries the
    // value set in kustomization.yaml.
    let kust = std::fs::read_to_string(k8s("kustomization.yaml")).expect("kustomization");
    let overlay = dir.path().join("overlay");
    std::fs::create_dir(&overlay).expect("overlay dir");
    for f in ["pushgate.yaml", "prometheus-scrape.yaml"] {
        std::fs::copy(k8s(f), overlay.join(f)).expect("copy");
    }
    std::fs::write(
        overlay.join("kustomization.yaml"),
        kust.replace(
            "cluster-domain=cluster.local",
            "cluster-domain=corp.example",
        ),
    )
    .expect("overlay kustomization");
    let (ok, out, err) = run(
        Command::new("kubectl").arg("kustomize").arg(&overlay),
        "install kubectl",
    );
    assert!(ok, "{err}");
    assert!(out.contains("cluster-domain: corp.example"), "{out}");
}

#[test]
fn prometheus_operator_monitors_select_the_pushgate_service_and_pods() {
    // kubernetes-validate has no schema for these CRDs: it must say so and nothing else, and
    // the structural check covers them.
    let operator = k8s("prometheus-operator.yaml");
    let (ok, out) = kubernetes_validate(&[&operator]);
    assert!(ok, "{out}");
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("Couldn't find schema for kind ServiceMonitor")
                || line.contains("Couldn't find schema for kind PodMonitor"),
            "unexpected kubernetes-validate output: {line}"
        );
    }
    check("operator", &[&k8s("pushgate.yaml"), &operator]);
}

#[test]
fn the_kubernetes_scrape_config_can_be_included_as_is() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = check("scrape", &[&k8s("prometheus-scrape.yaml")]);
    let path = dir.path().join("pushgate.yml");
    std::fs::write(&path, config).expect("temp file");
    let (ok, out, err) = run(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(&path),
        "install Debian's prometheus package (promtool)",
    );
    assert!(ok, "promtool check config: {out}{err}");
}

/// Removes a container on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

/// Removes an image on drop.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn the_dockerfile_runtime_stage_builds_offline_and_runs_non_root_on_a_read_only_root() {
    require_docker!();
    let bin = cluster_tests::binary();
    assert!(
        bin.exists(),
        "{} missing: cargo build -p pushgate",
        bin.display()
    );
    let tag = format!("pgbed-dockerfile:{}", std::process::id());
    let (ok, out, err) = run(
        Command::new(repo().join("scripts/build-image.sh"))
            .arg(&bin)
            .arg(&tag),
        "scripts/build-image.sh needs bash, ldd and docker",
    );
    let _image = Image(tag.clone());
    assert!(ok, "build-image.sh: {out}{err}");
    let (_, user, _) = run(
        Command::new("docker").args(["image", "inspect", "-f", "{{.Config.User}}", &tag]),
        "docker",
    );
    assert_eq!(user.trim(), "65534:65534", "the image's user");

    // As the Kubernetes example runs it: read-only root, no capabilities, no privilege
    // escalation, the persistence file on a volume at /data (here an anonymous one, which starts
    // with the image's /data and its owner).
    let name = format!("pgbed-dockerfile-{}", std::process::id());
    let port = free_port();
    let (ok, _, err) = run(
        Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &name,
            // scripts/testbed-clean.sh removes it if this test is killed before its cleanup.
            "--label",
            &format!("{}=1", cluster_tests::testbed::LABEL),
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "-v",
            "/data",
            "-p",
            &format!("127.0.0.1:{port}:9091"),
            &tag,
            "--persistence.file=/data/pushgate.snapshot",
            "--persistence.interval=1s",
        ]),
        "docker",
    );
    let _container = Container(name.clone());
    assert!(ok, "docker run: {err}");
    let base = format!("http://127.0.0.1:{port}");
    wait_for("the container to be ready", Duration::from_secs(30), || {
        matches!(http("GET", &base, "/-/ready", b""), Ok((200, _)))
    });
    let (st, body) =
        http("PUT", &base, "/metrics/job/dockerfile", b"probe_value 1\n").expect("push");
    assert_eq!(st, 200, "{body}");
    // The persistence counters are there at 0 from the start: wait for a success counted.
    let writes = |result: &str| -> f64 {
        let (_, metrics) = http("GET", &base, "/-/node-metrics", b"").expect("node metrics");
        let prefix = format!("pushgate_persistence_writes_total{{result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
    };
    wait_for(
        "a snapshot written to /data",
        Duration::from_secs(30),
        || writes("success") > 0.0,
    );
    assert_eq!(writes("error"), 0.0, "a snapshot write to /data failed");
    // The process itself runs as 65534, not only the image's metadata.
    let (_, pid, _) = run(
        Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &name]),
        "docker",
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .expect("the container's process status");
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert!(
        uid.split_whitespace().skip(1).all(|id| id == "65534"),
        "the process runs as {uid}"
    );
}
