//! Each flag's effective value as `/api/v1/status` and the status page list it, read from
//! clap's own definition and matches, so a new flag is listed there without being named twice.

use std::any::Any;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

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
        // The `--no-<flag>` negations: the flag itself shows the outcome.
        .filter(|a| !(a.is_hide_set() && a.get_id().as_str().starts_with(NEGATION_PREFIX)))
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

/// The id of the negation of the boolean flag with id `id`.
fn negation_id(id: &str) -> String {
    format!("{NEGATION_PREFIX}{id}")
}

/// The prefix of the ids (and long names) of the `--no-<flag>` arguments.
pub(crate) const NEGATION_PREFIX: &str = "no-";

/// `command` with a `--no-<flag>` for every boolean flag, as kingpin (upstream's flag parser)
/// has: the last of `--<flag>` and `--no-<flag>` given wins, so a wrapper can turn off what a
/// unit file turned on. Hidden from `--help` (kingpin lists them as `--[no-]flag`; clap cannot)
/// and left out of `/api/v1/status`, where the flag itself shows the outcome.
pub fn with_negations(command: Command) -> Command {
    let booleans: Vec<(String, String)> = command
        .get_arguments()
        .filter(|a| matches!(a.get_action(), ArgAction::SetTrue))
        .filter_map(|a| Some((a.get_id().to_string(), a.get_long()?.to_owned())))
        .collect();
    booleans.into_iter().fold(command, |command, (id, long)| {
        // Overriding goes both ways (whichever is given last wins): declared on the negation
        // only, so the flag keeps its place in the table.
        command.arg(
            Arg::new(negation_id(&id))
                .long(format!("{NEGATION_PREFIX}{long}"))
                .action(ArgAction::SetTrue)
                .hide(true)
                .overrides_with(id),
        )
    })
}

/// One flag's value: typed values in their canonical form (a duration as Go prints it, e.g.
/// `5m0s`, as upstream lists its flags; a number without leading zeros), anything else as given
/// (strings, paths, enum names); several values joined by commas, none as "".
fn value(matches: &ArgMatches, id: &str) -> String {
    typed(matches, id, go_duration)
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

/// A duration as Go's `time.Duration.String` writes it: `0s`, `1.5ms` below a second, else
/// `[<h>h][<m>m]<s>[.<fraction>]s` with the minutes shown whenever the hours are (`1h0m0s`).
pub(crate) fn go_duration(d: &Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000_000_000 {
        let (unit, div) = match ns {
            0..=999 => ("ns", 1),
            1_000..=999_999 => ("\u{b5}s", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", decimal(ns, div));
    }
    let minutes = ns / 60_000_000_000;
    let (h, m) = (minutes / 60, minutes % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&decimal(ns % 60_000_000_000, 1_000_000_000));
    out.push('s');
    out
}

/// `n / div` in decimal without trailing zeros (`div` a power of ten).
fn decimal(n: u128, div: u128) -> String {
    let (whole, rem) = (n / div, n % div);
    if rem == 0 {
        return whole.to_string();
    }
    let digits = div.to_string().len() - 1;
    let frac = format!("{rem:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
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
#[path = "flag_values_tests.rs"]
mod tests;
