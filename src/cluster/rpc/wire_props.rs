//! Property tests over the decoders of what peers send (`StoredFamily::from_wire`,
//! `prepared_from_wire`, `group_from_bytes`, `group_in_bytes`): arbitrary bytes and arbitrary
//! damage to valid encodings never panic, and whatever is accepted renders as text that the
//! text parser reads back into the same families.

use std::sync::Arc;

use proptest::prelude::*;

use super::wire::{group_from_bytes, group_in_bytes, group_to_bytes, prepared_from_wire};
use crate::exposition::{parse_text, NameScheme};
use crate::store::prepare::{prepare_text, Validation, NO_STORE};
use crate::store::render::Format;
use crate::store::{GroupKey, GroupSnapshot, StoredFamily};

fn key() -> GroupKey {
    GroupKey::new([
        ("job".to_string(), "j".to_string()),
        ("instance".to_string(), "i".to_string()),
    ])
}

/// A push body of a few families of every type, label values with the characters that need
/// escaping.
fn bodies() -> impl Strategy<Value = String> {
    let value = prop::sample::select(vec!["", "a", "x\\\"y", "line\\nbreak", "é", "#", "}"]);
    let family = (0usize..5, prop::collection::vec(value, 1..4)).prop_map(|(kind, values)| {
        let name = ["c_total", "g", "u", "s", "h"][kind];
        let mut out = match kind {
            0 => format!("# HELP {name} help with \\\\ and \\n\n# TYPE {name} counter\n"),
            1 => format!("# TYPE {name} gauge\n"),
            2 => String::new(),
            3 => format!("# TYPE {name} summary\n"),
            _ => format!("# TYPE {name} histogram\n"),
        };
        let mut values = values;
        values.sort();
        values.dedup();
        for (i, v) in values.iter().enumerate() {
            let l = format!("l=\"{v}\"");
            match kind {
                3 => out.push_str(&format!(
                    "{name}{{{l},quantile=\"0.5\"}} {i}\n{name}_sum{{{l}}} 1\n{name}_count{{{l}}} 2\n"
                )),
                4 => out.push_str(&format!(
                    "{name}_bucket{{{l},le=\"1\"}} 1\n{name}_bucket{{{l},le=\"+Inf\"}} 2\n{name}_sum{{{l}}} 3\n{name}_count{{{l}}} 2\n"
                )),
                _ => out.push_str(&format!("{name}{{{l}}} {i}.5\n")),
            }
        }
        out
    });
    prop::collection::vec(family, 1..4).prop_map(|fams| {
        // One block per name: a repeated family would be refused by the parser.
        let mut seen = std::collections::HashSet::new();
        fams.into_iter()
            .filter(|f| {
                seen.insert(
                    f.lines()
                        .last()
                        .map(|l| l.split(['{', '_']).next().unwrap_or("").to_owned()),
                )
            })
            .collect()
    })
}

fn families_of(body: &str) -> Vec<StoredFamily> {
    let parsed = crate::exposition::parse_text_borrowed(body.as_bytes(), NameScheme::Legacy)
        .expect("generated bodies parse");
    prepare_text(key(), &parsed, true, &Validation::default(), NO_STORE)
        .expect("generated bodies are valid pushes")
        .families
}

fn snapshot_of(families: Vec<StoredFamily>) -> GroupSnapshot {
    let stamps = crate::store::Stamps::whole(1, families.len(), [1.0, 0.0], true);
    GroupSnapshot {
        key: Arc::new(key()),
        families: families.into_iter().map(|f| (f, 1.0)).collect(),
        push_time: 1.0,
        failure_time: 0.0,
        last_push_successful: true,
        aggregating: false,
        ttl: 0.0,
        version: 1,
        stamps,
        timing: None,
        agg: None,
        agg_digest: 0,
    }
}

/// Renders `g` as a store would and checks the text parses back into the same families (each
/// of `g`'s families with as many metrics), and the protobuf form decodes.
fn renders_back(g: &GroupSnapshot) -> Result<(), TestCaseError> {
    let reserved = crate::telemetry::reserved_names();
    let mut text = Vec::new();
    crate::store::render::render_snapshots(
        std::slice::from_ref(g),
        &reserved,
        &[],
        Format::Text,
        None,
        usize::MAX,
        &mut |c| text.extend_from_slice(&c),
    );
    let parsed = parse_text(&text, NameScheme::Legacy);
    prop_assert!(
        parsed.is_ok(),
        "render does not parse: {:?}\n{}",
        parsed,
        String::from_utf8_lossy(&text)
    );
    let parsed = parsed.unwrap_or_default();
    for (f, _) in &g.families {
        let back = parsed.iter().find(|p| p.name() == &*f.name);
        prop_assert!(back.is_some(), "family {} missing from the render", f.name);
        if let Some(back) = back {
            prop_assert_eq!(back.metric.len(), f.len(), "metrics of {}", f.name);
            prop_assert_eq!(back.r#type(), f.typ);
        }
        // The JSON API's reader must not fail either.
        prop_assert_eq!(f.to_metric_family().metric.len(), f.len());
    }
    let mut proto = Vec::new();
    crate::store::render::render_snapshots(
        std::slice::from_ref(g),
        &reserved,
        &[],
        Format::Protobuf,
        None,
        usize::MAX,
        &mut |c| proto.extend_from_slice(&c),
    );
    let decoded = crate::exposition::decode_delimited(&proto);
    prop_assert!(decoded.is_ok(), "protobuf render does not decode: {:?}\n{:?}", decoded, proto);
    Ok(())
}

/// Damage to an encoding: each (position, byte, kind) overwrites, inserts or removes a byte.
fn damage() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
    let byte = prop_oneof![
        prop::sample::select(b"\n#{}\" \\_a0=,".to_vec()),
        any::<u8>(),
    ];
    prop::collection::vec((any::<prop::sample::Index>(), byte, 0u8..3), 1..4)
}

fn damaged(mut b: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, kind) in edits {
        if b.is_empty() {
            b.push(*byte);
            continue;
        }
        let i = at.index(b.len());
        match kind {
            0 => b[i] = *byte,
            1 => b.insert(i, *byte),
            _ => {
                b.remove(i);
            }
        }
    }
    b
}

/// Runs every decoder on `b` (as a family and as a group); each accepted result must render
/// back.
fn every_decoder(b: Vec<u8>) -> Result<(), TestCaseError> {
    let k = key();
    if let Ok(f) = StoredFamily::from_wire(&b, &k, NameScheme::Legacy) {
        renders_back(&snapshot_of(vec![f]))?;
    }
    let raw = [bytes::Bytes::from(b.clone())];
    if let Ok(fams) = prepared_from_wire(&raw, &k, NameScheme::Legacy, true, false) {
        renders_back(&snapshot_of(fams))?;
    }
    let raw = bytes::Bytes::from(b);
    if let Ok(g) = group_from_bytes(&raw, NameScheme::Legacy) {
        renders_back(&g)?;
    }
    if let Ok(g) = group_in_bytes(&raw, NameScheme::Legacy) {
        renders_back(&g)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_encodings_are_accepted_and_render_back(body in bodies()) {
        let fams = families_of(&body);
        for f in &fams {
            let mut w = Vec::new();
            f.to_wire(&mut w);
            let back = StoredFamily::from_wire(&w, &key(), NameScheme::Legacy);
            prop_assert!(back.is_ok(), "{:?}", back.err());
        }
        let g = snapshot_of(fams);
        let raw = bytes::Bytes::from(group_to_bytes(&g));
        let back = group_from_bytes(&raw, NameScheme::Legacy);
        prop_assert!(back.is_ok(), "{:?}", back.err());
        if let Ok(back) = back {
            renders_back(&back)?;
        }
    }

    #[test]
    fn damaged_families_never_panic_and_render_back_when_accepted(
        body in bodies(),
        pick in any::<prop::sample::Index>(),
        edits in damage(),
    ) {
        let fams = families_of(&body);
        let f = &fams[pick.index(fams.len())];
        let mut w = Vec::new();
        f.to_wire(&mut w);
        every_decoder(damaged(w, &edits))?;
    }

    #[test]
    fn damaged_groups_never_panic_and_render_back_when_accepted(
        body in bodies(),
        edits in damage(),
    ) {
        let g = snapshot_of(families_of(&body));
        every_decoder(damaged(group_to_bytes(&g), &edits))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        every_decoder(b)?;
    }
}
