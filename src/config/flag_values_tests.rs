//! Tests of `flag_values.rs`.

use super::super::Config;

fn flags(args: &[&str]) -> Vec<(String, String)> {
    Config::try_from_args(std::iter::once("pushgate").chain(args.iter().copied()))
        .unwrap()
        .flag_values()
        .to_vec()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const SINGLE_NODE_DEFAULTS: &[(&str, &str)] = &[
    ("web.listen-address", ":9091"),
    ("web.systemd-socket", "false"),
    ("web.config.file", ""),
    ("web.telemetry-path", "/metrics"),
    ("web.external-url", ""),
    ("web.route-prefix", ""),
    ("web.read-header-timeout", "30s"),
    ("web.idle-timeout", "2m0s"),
    ("web.max-connections", "8192"),
    ("web.auth.max-pending", "16"),
    ("web.auth.max-pending-per-client", "2"),
    ("web.enable-lifecycle", "false"),
    ("web.enable-admin-api", "false"),
    ("persistence.file", ""),
    ("persistence.interval", "5m0s"),
    ("persistence.start-empty-on-error", "false"),
    ("push.disable-consistency-check", "false"),
    ("push.enable-utf8-names", "false"),
    ("push.max-body-bytes", "67108864"),
    ("push.max-inflight-bytes", "268435456"),
    ("push.max-series-per-push", "100000"),
    ("push.max-label-name-length", "1024"),
    ("push.max-label-value-length", "1048576"),
    ("push.max-grouping-labels", "256"),
    ("push.max-groups", "1000000"),
    ("push.group-ttl", "0s"),
    ("log.level", "info"),
    ("log.format", "logfmt"),
];

#[test]
fn a_single_node_lists_every_flag_but_the_cluster_ones_with_its_default() {
    assert_eq!(flags(&[]), pairs(SINGLE_NODE_DEFAULTS));
}

#[test]
fn given_values_are_listed_in_their_effective_form() {
    let got = flags(&[
        "--web.listen-address=:1",
        "--web.listen-address=127.0.0.1:2",
        "--web.config.file=/etc/web.yml",
        "--web.enable-lifecycle",
        "--persistence.interval=1m30s",
        "--push.max-groups=010",
        "--log.level=debug",
        "--log.format=json",
    ]);
    let get = |name: &str| {
        got.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{name} missing in {got:?}"))
    };
    assert_eq!(get("web.listen-address"), ":1,127.0.0.1:2");
    assert_eq!(get("web.config.file"), "/etc/web.yml");
    assert_eq!(get("web.enable-lifecycle"), "true");
    assert_eq!(get("web.enable-admin-api"), "false");
    assert_eq!(get("persistence.interval"), "1m30s");
    assert_eq!(get("push.max-groups"), "10");
    assert_eq!(get("log.level"), "debug");
    assert_eq!(get("log.format"), "json");
}

#[test]
fn a_cluster_node_also_lists_the_cluster_flags() {
    let got = flags(&[
        "--cluster.listen-address=127.0.0.1:9094",
        "--cluster.peer=a:9094",
        "--cluster.peer=b:9094",
    ]);
    let mut expected = pairs(SINGLE_NODE_DEFAULTS);
    expected.extend(pairs(&[
        ("cluster.listen-address", "127.0.0.1:9094"),
        ("cluster.advertise-address", ""),
        ("cluster.peer", "a:9094,b:9094"),
        ("cluster.name", "pushgate"),
        ("cluster.gossip-key-file", ""),
        ("cluster.replication-factor", "2"),
        ("cluster.gossip-interval", "200ms"),
        ("cluster.peer-timeout", "2s"),
        ("cluster.tls-config", ""),
        ("cluster.anti-entropy-interval", "10s"),
        ("cluster.tombstone-lifetime", "1h0m0s"),
        ("cluster.max-hints", "100000"),
        ("cluster.max-clock-skew", "1m0s"),
        ("cluster.max-tombstones", "100000"),
        ("cluster.max-tombstone-bytes", "33554432"),
        ("cluster.grpc-max-message-bytes", "0"),
        ("cluster.grpc-max-streams", "256"),
        ("cluster.grpc-max-concurrency", "2048"),
        ("cluster.grpc-timeout", "30s"),
        ("cluster.max-batch-items", "1024"),
        ("cluster.max-scrape-bytes", "2147483648"),
        ("cluster.rebalance-rate", "2000"),
        ("cluster.join-timeout", "30s"),
        ("cluster.shutdown-timeout", "30s"),
        ("cluster.drain-period", "10s"),
        ("cluster.write-quorum", "0"),
    ]));
    assert_eq!(got, expected);
}

#[test]
fn durations_are_listed_as_go_prints_them() {
    use super::go_duration;
    use std::time::Duration;
    for (d, want) in [
        (Duration::ZERO, "0s"),
        (Duration::from_nanos(5), "5ns"),
        (Duration::from_micros(1500), "1.5ms"),
        (Duration::from_micros(20), "20\u{b5}s"),
        (Duration::from_secs(30), "30s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(300), "5m0s"),
        (Duration::from_secs(3600), "1h0m0s"),
        (Duration::from_secs(3600 * 26 + 1), "26h0m1s"),
    ] {
        assert_eq!(go_duration(&d), want, "{d:?}");
    }
}

/// Every boolean flag has kingpin's `--no-<flag>`: the last of the two given wins, and the
/// negations are not listed as flags of their own.
#[test]
fn every_boolean_flag_has_its_negation() {
    use clap::CommandFactory;
    let booleans: Vec<String> = Config::command()
        .get_arguments()
        .filter(|a| matches!(a.get_action(), clap::ArgAction::SetTrue))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    assert!(booleans.len() >= 6, "{booleans:?}");
    let value = |args: &[String], flag: &str| {
        let listed = flags(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            !listed.iter().any(|(name, _)| name.starts_with("no-")),
            "{listed:?}"
        );
        listed.into_iter().find(|(n, _)| n == flag).map(|(_, v)| v)
    };
    // On a cluster node, so that the cluster's booleans are listed too.
    let cluster = "--cluster.listen-address=127.0.0.1:9094".to_owned();
    for flag in &booleans {
        let (on, off) = (format!("--{flag}"), format!("--no-{flag}"));
        let set = |args: &[&String]| {
            let mut all = vec![cluster.clone()];
            all.extend(args.iter().map(|a| (*a).clone()));
            value(&all, flag)
        };
        assert_eq!(set(&[&on]).as_deref(), Some("true"), "{flag}");
        assert_eq!(set(&[&off]).as_deref(), Some("false"), "{flag}");
        assert_eq!(set(&[&on, &off]).as_deref(), Some("false"), "{flag}");
        assert_eq!(set(&[&off, &on]).as_deref(), Some("true"), "{flag}");
    }
    let typed = Config::try_from_args([
        "pushgate",
        "--web.enable-admin-api",
        "--no-web.enable-admin-api",
        "--no-push.enable-utf8-names",
        "--push.enable-utf8-names",
    ])
    .unwrap();
    assert!(!typed.enable_admin_api);
    assert!(typed.enable_utf8_names);
    // Only booleans have one.
    assert!(Config::try_from_args(["pushgate", "--no-persistence.file"]).is_err());
}
