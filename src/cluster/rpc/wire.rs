//! Conversions between the node-to-node messages and the store's types. Everything that arrives
//! from a peer is validated like a persistence file or a push body before it reaches the store:
//! a malformed message is answered with an error status, never a panic.

use prost::Message;
use tonic::{Code, Status};

use crate::exposition::LabelPair;
use crate::exposition::{is_valid_label_name, NameScheme};
use crate::store::codec::{decode_group, encode_group_wire, snapshot_proto};
use crate::store::family::{BlockBuilder, Expect};
use crate::store::{GroupKey, GroupSnapshot, StoredFamily};

/// A status carried in a batch reply's item (`error_code`, `error`).
pub(crate) fn item_status(code: u32, message: String) -> Status {
    Status::new(Code::from(i32::try_from(code).unwrap_or(i32::MAX)), message)
}

pub(crate) fn copy_status(s: &Status) -> Status {
    Status::new(s.code(), s.message())
}

/// The `error_code`/`error` pair of a failed batch item.
pub fn status_fields(s: &Status) -> (u32, String) {
    // Code 0 means success on the wire; a failed item never carries it.
    let code = match s.code() {
        Code::Ok => Code::Unknown,
        c => c,
    };
    (code as u32, s.message().to_owned())
}

/// `n` items failed with `status`.
pub(crate) fn failed<T>(n: usize, status: &Status) -> Vec<Result<T, Status>> {
    (0..n).map(|_| Err(copy_status(status))).collect()
}

pub fn key_to_pb(key: &GroupKey) -> Vec<LabelPair> {
    key.labels()
        .iter()
        .map(|(n, v)| LabelPair {
            name: Some(n.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A grouping key from a peer: label names valid, `job` present and non-empty.
pub fn key_from_pb(pairs: Vec<LabelPair>, names: NameScheme) -> Result<GroupKey, String> {
    if pairs.is_empty() || pairs.len() > 1024 {
        return Err(format!("grouping key with {} labels", pairs.len()));
    }
    let key = GroupKey::new(
        pairs
            .into_iter()
            .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default())),
    );
    if key.get("job").is_none_or(str::is_empty) {
        return Err("grouping key without a job label".into());
    }
    if let Some((n, _)) = key
        .labels()
        .iter()
        .find(|(n, _)| !is_valid_label_name(n, names))
    {
        return Err(format!("grouping key has an invalid label name {n:?}"));
    }
    Ok(key)
}

/// The families of a forwarded push to the group `key` (`StoredFamily` wire form), validated:
/// each family's layout and exposition (`StoredFamily::from_wire`: its lines, name, type,
/// labels and the grouping labels), no series twice in a family, names sorted and unique, and
/// none of the push time families the gateway owns.
/// Timestamps are allowed only when the push says it carries them (`has_timestamps`: the
/// primary then refuses it and records the failure, like a single node).
pub fn prepared_from_wire(
    raw: &[bytes::Bytes],
    key: &GroupKey,
    names: NameScheme,
    replace_all: bool,
    has_timestamps: bool,
) -> Result<Vec<StoredFamily>, String> {
    let expect = Expect {
        timestamps: has_timestamps,
        ..Expect::stored(key, names)
    };
    use crate::store::prepare::{PUSH_FAILURE_TIME_METRIC, PUSH_TIME_METRIC};
    // The families of a PUT share a block; a POST's get one each (see `StoredFamily`).
    let mut block = BlockBuilder::default();
    let mut out: Vec<StoredFamily> = Vec::with_capacity(raw.len());
    for b in raw {
        StoredFamily::from_wire_into(&mut block, b, &expect)?;
        if !replace_all {
            out.extend(std::mem::take(&mut block).finish());
        }
    }
    if replace_all {
        out = block.finish();
    }
    for (i, f) in out.iter().enumerate() {
        if &*f.name == PUSH_TIME_METRIC || &*f.name == PUSH_FAILURE_TIME_METRIC {
            return Err(format!(
                "forwarded push carries the gateway's own {:?}",
                f.name
            ));
        }
        if i > 0 && out[i - 1].name >= f.name {
            return Err(format!(
                "forwarded families are not sorted by unique name at {:?}",
                f.name
            ));
        }
        if f.first_duplicate().is_some() {
            return Err(format!("forwarded family {:?} repeats a series", f.name));
        }
    }
    Ok(out)
}

pub fn group_to_bytes(g: &GroupSnapshot) -> Vec<u8> {
    let mut buf = Vec::with_capacity(group_wire_capacity(g));
    encode_group_wire(g, &mut buf);
    buf
}

/// Room for a group's wire form (families, plus key, times and tags): one allocation, no
/// regrowth.
pub(crate) fn group_wire_capacity(g: &GroupSnapshot) -> usize {
    let families: usize = g.families.iter().map(|(f, _)| f.wire_len() + 8).sum();
    let key: usize = g
        .key
        .labels()
        .iter()
        .map(|(n, v)| n.len() + v.len() + 8)
        .sum();
    families + key + 64 + 9 * g.families.len()
}

/// A group from a peer, validated like a persistence file's. Its families are decoded as slices
/// of `raw`; the one copy made is into the group's block.
pub fn group_from_bytes(raw: &bytes::Bytes, names: NameScheme) -> Result<GroupSnapshot, String> {
    let g = snapshot_proto::Group::decode(raw.clone())
        .map_err(|e| format!("undecodable group: {e}"))?;
    decode_group(0, g, names, None)
}

/// [`group_from_bytes`] for a copy rendered once and dropped (a merged scrape's): the families
/// stay where they are in `raw` instead of being copied out, and hold it alive meanwhile.
pub fn group_in_bytes(raw: &bytes::Bytes, names: NameScheme) -> Result<GroupSnapshot, String> {
    let g = snapshot_proto::Group::decode(raw.clone())
        .map_err(|e| format!("undecodable group: {e}"))?;
    decode_group(0, g, names, Some(raw))
}

/// `buf` as consecutive slices ending at `ends` (ascending, the last one `buf.len()`), sharing
/// one allocation.
pub fn split_at_ends(buf: Vec<u8>, ends: &[usize]) -> Vec<bytes::Bytes> {
    let all = bytes::Bytes::from(buf);
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let part = all.slice(start..end);
            start = end;
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prepare::{prepare_push, Validation};

    fn job() -> GroupKey {
        GroupKey::new([("job".to_string(), "j".to_string())])
    }

    fn wire(body: &str) -> Vec<bytes::Bytes> {
        let fams = crate::exposition::parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
        let key = GroupKey::new([("job".to_string(), "j".to_string())]);
        let p = prepare_push(key, fams, true, &Validation::default()).unwrap();
        p.families
            .iter()
            .map(|f| {
                let mut out = Vec::new();
                f.to_wire(&mut out);
                bytes::Bytes::from(out)
            })
            .collect()
    }

    #[test]
    fn forwarded_families_share_a_block_for_a_put_and_not_for_a_post() {
        let raw = wire("a 1\nb{x=\"1\"} 2\nc 3\n");
        let put = prepared_from_wire(&raw, &job(), NameScheme::Legacy, true, false).unwrap();
        let post = prepared_from_wire(&raw, &job(), NameScheme::Legacy, false, false).unwrap();
        assert_eq!(put.len(), 3);
        assert_eq!(post.len(), 3);
        for (i, (f, g)) in put.iter().zip(&post).enumerate() {
            assert_eq!(f.name, g.name);
            assert_eq!(f.text(), g.text());
            assert_eq!(
                f.series().collect::<Vec<_>>(),
                g.series().collect::<Vec<_>>()
            );
            assert!(StoredFamily::same_block(f, &put[0]));
            assert_eq!(StoredFamily::same_block(g, &post[0]), i == 0);
        }
    }

    #[test]
    fn forwarded_families_are_refused_when_malformed() {
        let raw = wire("a 1\nb 2\n");
        for replace_all in [true, false] {
            let refuse = |raw: &[bytes::Bytes], want: &str| {
                let err = prepared_from_wire(raw, &job(), NameScheme::Legacy, replace_all, false)
                    .unwrap_err();
                assert!(err.contains(want), "{err} (wanted {want:?})");
            };
            refuse(
                &[raw[1].clone(), raw[0].clone()],
                "not sorted by unique name",
            );
            refuse(
                &[raw[0].clone(), raw[0].clone()],
                "not sorted by unique name",
            );
            let own = StoredFamily::gauge(
                crate::store::family::intern("push_time_seconds"),
                crate::store::family::intern(""),
                &[("job".to_string(), "j".to_string())],
                1.0,
            );
            let mut own_wire = Vec::new();
            own.to_wire(&mut own_wire);
            refuse(&[bytes::Bytes::from(own_wire)], "the gateway's own");
            let mut cut = raw[0].to_vec();
            cut.truncate(cut.len() - 3);
            refuse(&[bytes::Bytes::from(cut)], "");
        }
    }

    const BODIES: &str = "# HELP x some help\n# TYPE x counter\nx{l=\"1\"} 1\nx{l=\"2\"} 2\n\
        # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n\
        # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\nplain 4\n";

    fn fresh_store() -> crate::store::Store {
        crate::store::Store::new(crate::store::StoreOptions::default())
    }

    fn render_all(s: &crate::store::Store) {
        for format in [
            crate::store::render::Format::Text,
            crate::store::render::Format::Protobuf,
        ] {
            s.render(format, &[], &mut Vec::new());
        }
    }

    type Edits = Vec<crate::testsupport::Edit>;

    fn edits() -> impl proptest::strategy::Strategy<Value = Edits> {
        use proptest::prelude::*;
        proptest::collection::vec((0usize..2048, any::<u8>(), 0u8..4), 1..6)
    }

    proptest::proptest! {
        /// A forwarded push's families, edited: refused, or applied to a fresh store that then
        /// renders; never a panic.
        #[test]
        fn forwarded_families_never_panic(
            edits in edits(),
            which in 0usize..4,
            replace_all in proptest::prelude::any::<bool>(),
            utf8 in proptest::prelude::any::<bool>(),
        ) {
            let names = if utf8 { NameScheme::Utf8 } else { NameScheme::Legacy };
            let mut raw = wire(BODIES);
            let i = which % raw.len();
            raw[i] = bytes::Bytes::from(crate::testsupport::mutate(&raw[i], &edits));
            let key = GroupKey::new([("job".to_string(), "j".to_string())]);
            let _ = StoredFamily::from_wire(&raw[i], &key, names);
            if let Ok(families) = prepared_from_wire(&raw, &key, names, replace_all, false) {
                let store = fresh_store();
                let _ = store.push(
                    crate::store::PreparedPush {
                        key,
                        families,
                        replace_all,
                        has_timestamps: false,
                        aggregating: false,
                        agg_digest: 0,
                        ttl: 0.0,
                    },
                    1.0,
                );
                render_all(&store);
            }
        }

        /// A group from a peer, edited: refused, or applied to a fresh store as a replica that
        /// then renders, whether decoded as a held copy or in place; never a panic.
        #[test]
        fn peer_groups_never_panic(edits in edits(), utf8 in proptest::prelude::any::<bool>()) {
            let names = if utf8 { NameScheme::Utf8 } else { NameScheme::Legacy };
            let fams = crate::exposition::parse_text(BODIES.as_bytes(), NameScheme::Legacy).unwrap();
            let key = GroupKey::new([("job".to_string(), "j".to_string())]);
            let store = fresh_store();
            store.push(prepare_push(key.clone(), fams, true, &Validation::default()).unwrap(), 1.0).unwrap();
            store.record_failure(&key, 2.0);
            let g = store.group(&key).unwrap();
            let raw = bytes::Bytes::from(crate::testsupport::mutate(&group_to_bytes(&g), &edits));
            let decoded = [group_from_bytes(&raw, names), group_in_bytes(&raw, names)];
            for g in decoded.into_iter().flatten() {
                let s = fresh_store();
                s.apply_replica(g);
                render_all(&s);
            }
        }

        /// A grouping key from a peer: valid or refused, never a panic.
        #[test]
        fn peer_keys_never_panic(
            pairs in proptest::collection::vec(
                (proptest::option::of("[a-z_]{0,3}|\\PC{0,3}"), proptest::option::of("\\PC{0,3}")), 0..5),
        ) {
            let pairs: Vec<LabelPair> = pairs
                .into_iter()
                .map(|(name, value)| LabelPair { name, value })
                .collect();
            if let Ok(k) = key_from_pb(pairs, NameScheme::Legacy) {
                proptest::prop_assert!(k.get("job").is_some_and(|j| !j.is_empty()));
            }
        }
    }
}
