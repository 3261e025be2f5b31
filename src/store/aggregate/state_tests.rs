//! Property tests of the merge: commutative, associative, idempotent, and every increment
//! counted exactly once however copies are merged, repeated or reordered.

use proptest::prelude::*;

use super::super::apply::{apply, materialize, Ctx, Incoming, Undo};
use super::*;
use crate::exposition::{parse_text, NameScheme};
use crate::store::prepare::Validation;

/// What a node does in a simulated run.
#[derive(Debug, Clone)]
enum Op {
    /// Node adds `amount` to series `series` of the counter.
    Add { node: u64, series: u8, amount: u8 },
    /// Node replaces the series' value (`clearmode="replace"`).
    Replace { node: u64, series: u8, value: u8 },
    /// Node resets the whole group (a DELETE).
    Reset { node: u64 },
    /// Node `to` merges node `from`'s copy.
    Merge { from: u64, to: u64 },
}

const NODES: u64 = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NODES, 0u8..3, 1u8..10).prop_map(|(node, series, amount)| Op::Add { node, series, amount }),
        1 => (0..NODES, 0u8..3, 0u8..10).prop_map(|(node, series, value)| Op::Replace { node, series, value }),
        1 => (0..NODES).prop_map(|node| Op::Reset { node }),
        3 => (0..NODES, 0..NODES).prop_map(|(from, to)| Op::Merge { from, to }),
    ]
}

fn push(node: &mut AggState, id: u64, version: u64, body: &str) {
    let fams = parse_text(body.as_bytes(), NameScheme::Legacy).expect("test bodies parse");
    let ctx = Ctx {
        stamp: Stamp {
            version,
            origin: id,
        },
        partial: PartialId {
            node: id,
            incarnation: 1,
        },
    };
    apply(node, Incoming::Model(&fams), ctx, &Validation::default(), &mut Undo::default()).expect("valid push");
    node.prune();
}

/// Runs `ops` on three nodes; their states at the end.
fn run(ops: &[Op]) -> Vec<AggState> {
    let mut nodes = vec![AggState::default(); NODES as usize];
    for (i, op) in ops.iter().enumerate() {
        let version = i as u64 + 1;
        match *op {
            Op::Add { node, series, amount } => push(
                &mut nodes[node as usize],
                node,
                version,
                &format!("# TYPE c counter\nc{{s=\"{series}\"}} {amount}\n"),
            ),
            Op::Replace { node, series, value } => push(
                &mut nodes[node as usize],
                node,
                version,
                &format!("# TYPE c counter\nc{{s=\"{series}\",clearmode=\"replace\"}} {value}\n"),
            ),
            Op::Reset { node } => {
                let n = &mut nodes[node as usize];
                n.reset = Stamp {
                    version,
                    origin: node,
                };
                n.prune();
            }
            Op::Merge { from, to } => {
                let copy = nodes[from as usize].clone();
                nodes[to as usize].merge(&copy);
            }
        }
    }
    nodes
}

fn merged(a: &AggState, b: &AggState) -> AggState {
    let mut m = a.clone();
    m.merge(b);
    m
}

fn exposed(s: &AggState) -> Vec<crate::exposition::MetricFamily> {
    materialize(s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(ops in prop::collection::vec(op(), 0..40)) {
        let n = run(&ops);
        let (a, b, c) = (&n[0], &n[1], &n[2]);
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(&merged(a, a), a);
        // Merging a copy it already includes changes nothing.
        let ab = merged(a, b);
        prop_assert_eq!(merged(&ab, b), ab.clone());
        prop_assert_eq!(exposed(&merged(&ab, a)), exposed(&ab));
    }

    /// Without resets, every increment is counted exactly once once the copies meet, however
    /// many times and in which order they were merged on the way.
    #[test]
    fn every_increment_counts_once(ops in prop::collection::vec(op(), 0..60)) {
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|o| matches!(o, Op::Add { .. } | Op::Merge { .. }))
            .collect();
        let n = run(&ops);
        let all = merged(&merged(&n[0], &n[1]), &n[2]);
        for series in 0u8..3 {
            let want: u64 = ops
                .iter()
                .filter_map(|o| match o {
                    Op::Add { series: s, amount, .. } if *s == series => Some(u64::from(*amount)),
                    _ => None,
                })
                .sum();
            let labels = vec![("s".to_owned(), series.to_string())];
            let got = all
                .families
                .get("c")
                .and_then(|f| f.series.get(&labels))
                .and_then(|s| s.value(Stamp::default()))
                .map_or(0.0, |v| v.sums[0]);
            prop_assert_eq!(got, want as f64, "series {}", series);
        }
    }

    /// After a reset, only increments applied after it count, wherever they were applied.
    #[test]
    fn a_reset_drops_what_came_before_it_everywhere(
        before in prop::collection::vec(op(), 0..30),
        after in prop::collection::vec((0..NODES, 1u8..10), 0..20),
    ) {
        let before: Vec<Op> = before
            .into_iter()
            .filter(|o| !matches!(o, Op::Reset { .. }))
            .collect();
        let mut ops = before;
        ops.push(Op::Reset { node: 0 });
        for node in 1..NODES {
            ops.push(Op::Merge { from: 0, to: node });
        }
        ops.extend(after.iter().map(|(node, amount)| Op::Add { node: *node, series: 0, amount: *amount }));
        // Old copies merged back in after the reset bring nothing back.
        let mut nodes = run(&ops);
        let old = run(&ops[..ops.len() - after.len() - NODES as usize]);
        for o in &old {
            nodes[1].merge(o);
        }
        let all = merged(&merged(&nodes[0], &nodes[1]), &nodes[2]);
        let want: u64 = after.iter().map(|(_, a)| u64::from(*a)).sum();
        let got = all
            .families
            .get("c")
            .and_then(|f| f.series.get(&vec![("s".to_owned(), "0".to_owned())]))
            .and_then(|s| s.value(all.reset))
            .map_or(0.0, |v| v.sums[0]);
        prop_assert_eq!(got, want as f64);
        for other in 1u8..3 {
            let labels = vec![("s".to_owned(), other.to_string())];
            let live = all
                .families
                .get("c")
                .and_then(|f| f.series.get(&labels))
                .and_then(|s| s.value(all.reset));
            prop_assert!(live.is_none(), "series {} survived the reset", other);
        }
    }

    /// A push added and then undone (refused later) leaves the state exactly as it was,
    /// whatever it added, replaced or created.
    #[test]
    fn an_undone_push_leaves_the_state_as_it_was(
        ops in prop::collection::vec(op(), 0..30),
        lines in prop::collection::vec((0u8..5, 0u8..3, 1u8..9, 0u8..3), 1..6),
    ) {
        let mut state = run(&ops).remove(0);
        let before = state.clone();
        let mut by_family: std::collections::BTreeMap<u8, std::collections::BTreeMap<u8, String>> =
            Default::default();
        for (family, series, value, mode) in lines {
            let mode = ["aggregate", "replace", "family"][usize::from(mode)];
            by_family.entry(family).or_default().insert(
                series,
                format!("f{family}{{s=\"{series}\",clearmode=\"{mode}\"}} {value}\n"),
            );
        }
        let mut body = String::new();
        for (family, lines) in by_family {
            body.push_str(&format!("# TYPE f{family} counter\n"));
            body.extend(lines.into_values());
        }
        body.push_str("# TYPE c counter\nc{s=\"9\"} 1\n");
        let fams = parse_text(body.as_bytes(), NameScheme::Legacy).expect("test bodies parse");
        let ctx = Ctx {
            stamp: Stamp { version: 1000, origin: 7 },
            partial: PartialId { node: 7, incarnation: 1 },
        };
        let mut undo = Undo::default();
        apply(&mut state, Incoming::Model(&fams), ctx, &Validation::default(), &mut undo).expect("valid push");
        prop_assert_ne!(&state, &before);
        undo.revert(&mut state);
        prop_assert_eq!(state, before);
    }
}
