//! Each flag's effective value as `/api/v1/status` and the status page list it, read from
//! clap's own definition and matches, so a new flag is listed there without being named twice.

use std::any::Any;
use std::time::Duration;

use clap::{ArgAction, ArgMatches, Command};

/// Flags listed only on a cluster node (`--cluster.listen-address` set), so a single node's
/// `/api/v1/status` stays upstream's.
const CLUSTER_FLAGS: &str = "cluster.";

/// Every flag of `command` (by its long name) with its value in `matches` (given or default),
/// in the order they are defined.
pub fn effective_values(command: &Command, matches: &ArgMatches) -> Vec<(String, String)> {
    let mut flags: Vec<(String, String)> = command
        .get_arguments()
        .filter(|a| {
            !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
        })
        .filter_map(|a| {
            Some((
                a.get_long()?.to_owned(),
                value(matches, a.get_id().as_str()),
            ))
        })
        .collect();
    let cluster = flags
        .iter()
        .any(|(name, v)| name == "cluster.listen-address" && !v.is_empty());
    if !cluster {
        flags.retain(|(name, _)| !name.starts_with(CLUSTER_FLAGS));
    }
    flags
}

/// One flag's value: typed values in their canonical form (a duration as Rust prints it,
/// e.g. `300s`; a number without leading zeros), anything else as given (strings, paths,
/// enum names); several values joined by commas, none as "".
fn value(matches: &ArgMatches, id: &str) -> String {
    typed(matches, id, |d: &Duration| format!("{d:?}"))
        .or_else(|| typed(matches, id, usize::to_string))
        .or_else(|| typed(matches, id, u32::to_string))
        .or_else(|| typed(matches, id, bool::to_string))
        .unwrap_or_else(|| {
            matches
                .get_raw(id)
                .map(|values| joined(values.map(|v| v.to_string_lossy().into_owned())))
                .unwrap_or_default()
        })
}

/// The flag's values shown by `show`, `None` when they are not `T`s.
fn typed<T: Any + Clone + Send + Sync + 'static>(
    matches: &ArgMatches,
    id: &str,
    show: impl Fn(&T) -> String,
) -> Option<String> {
    match matches.try_get_many::<T>(id) {
        Ok(values) => Some(values.map(|v| joined(v.map(show))).unwrap_or_default()),
        Err(_) => None,
    }
}

fn joined(values: impl Iterator<Item = String>) -> String {
    values.collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
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
        ("web.config.file", ""),
        ("web.telemetry-path", "/metrics"),
        ("web.external-url", ""),
        ("web.route-prefix", ""),
        ("web.read-header-timeout", "30s"),
        ("web.idle-timeout", "120s"),
        ("web.max-connections", "8192"),
        ("web.auth.max-pending", "16"),
        ("web.auth.max-pending-per-client", "2"),
        ("web.enable-lifecycle", "false"),
        ("web.enable-admin-api", "false"),
        ("persistence.file", ""),
        ("persistence.interval", "300s"),
        ("persistence.start-empty-on-error", "false"),
        ("push.disable-consistency-check", "false"),
        ("push.enable-utf8-names", "false"),
        ("push.max-body-bytes", "67108864"),
        ("push.max-inflight-bytes", "268435456"),
        ("push.max-series-per-push", "100000"),
        ("push.max-label-name-length", "1024"),
        ("push.max-label-value-length", "1048576"),
        ("push.max-grouping-labels", "50"),
        ("push.max-groups", "1000000"),
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
        assert_eq!(get("persistence.interval"), "90s");
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
            ("cluster.replication-factor", "2"),
            ("cluster.gossip-interval", "200ms"),
            ("cluster.peer-timeout", "2s"),
            ("cluster.anti-entropy-interval", "10s"),
            ("cluster.tombstone-lifetime", "3600s"),
            ("cluster.max-hints", "100000"),
            ("cluster.rebalance-rate", "2000"),
            ("cluster.join-timeout", "30s"),
            ("cluster.shutdown-timeout", "30s"),
        ]));
        assert_eq!(got, expected);
    }
}
