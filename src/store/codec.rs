//! A group's protobuf form (`pushgate.snapshot.Group`, proto/pushgate/snapshot.proto), one
//! codec for the persistence file and for the cluster's gRPC: in a file the families are
//! `MetricFamily` messages; between nodes they travel as the store holds them
//! (`StoredFamily::to_wire`), so the receiver does not re-encode them. Decoding validates a
//! group like a push, so a bad file or peer cannot make the store invalid.

use std::sync::Arc;

use super::family::{self, encode_family_header, BlockBuilder, Expect, SharedBlock, StoredFamily};
use super::group::{GroupSnapshot, Stamps};
use super::key::GroupKey;
use super::prepare::{self, Limits, Validation};
use crate::exposition::{MetricType, NameScheme};

pub use super::snapshot_proto;

/// Appends one `pushgate.snapshot.Group` message's fields (for files: families as
/// `MetricFamily`, field 2, their protobuf metrics copied as they are).
pub fn encode_group(g: &GroupSnapshot, group_buf: &mut Vec<u8>) {
    encode_group_as(g, group_buf, None);
}

/// `encode_group` for node-to-node transfers: the families travel pre-encoded
/// (`StoredFamily::to_wire`, field 8), so the receiver does not re-encode them.
pub fn encode_group_wire(g: &GroupSnapshot, group_buf: &mut Vec<u8>) {
    encode_group_as(g, group_buf, Some(true));
}

/// Like `encode_group_wire` without the families' protobuf encodings (see
/// `StoredFamily::to_wire_text_only`): for a text-format merged scrape only.
pub fn encode_group_wire_text_only(g: &GroupSnapshot, group_buf: &mut Vec<u8>) {
    encode_group_as(g, group_buf, Some(false));
}

/// `wire`: None for the persistence form (`MetricFamily` messages), Some(with_proto) for the
/// wire form of the families.
fn encode_group_as(g: &GroupSnapshot, group_buf: &mut Vec<u8>, wire: Option<bool>) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    for (n, v) in g.key.labels() {
        let lp = crate::exposition::LabelPair {
            name: Some(n.clone()),
            value: Some(v.clone()),
        };
        prost::encoding::message::encode(1, &lp, group_buf);
    }
    let mut fam_buf = Vec::new();
    for (f, _) in &g.families {
        if let Some(with_proto) = wire {
            // The wire form's length is known up front: written in place, not copied.
            encode_key(8, WireType::LengthDelimited, group_buf);
            let len = if with_proto {
                f.wire_len()
            } else {
                f.wire_len_text_only()
            };
            encode_varint(len as u64, group_buf);
            let start = group_buf.len();
            if with_proto {
                f.to_wire(group_buf);
            } else {
                f.to_wire_text_only(group_buf);
            }
            debug_assert_eq!(group_buf.len() - start, len);
            continue;
        }
        fam_buf.clear();
        encode_family_header(&mut fam_buf, &f.name, &f.help, f.typ);
        fam_buf.extend_from_slice(f.proto_metrics());
        encode_key(2, WireType::LengthDelimited, group_buf);
        encode_varint(fam_buf.len() as u64, group_buf);
        group_buf.extend_from_slice(&fam_buf);
    }
    prost::encoding::double::encode(3, &g.push_time, group_buf);
    prost::encoding::double::encode(4, &g.failure_time, group_buf);
    prost::encoding::bool::encode(5, &g.last_push_successful, group_buf);
    prost::encoding::uint64::encode(6, &g.version, group_buf);
    let times: Vec<f64> = g.families.iter().map(|(_, t)| *t).collect();
    prost::encoding::double::encode_packed(7, &times, group_buf);
    if g.ttl > 0.0 {
        prost::encoding::double::encode(9, &g.ttl, group_buf);
    }
    let st = &g.stamps;
    for (field, v) in [
        (10, st.reset),
        (11, st.cleared),
        (12, st.push),
        (13, st.failure),
        (14, st.ttl),
    ] {
        if v != 0 {
            prost::encoding::uint64::encode(field, &v, group_buf);
        }
    }
    prost::encoding::uint64::encode_packed(15, &st.families, group_buf);
    if let (Some(_), Some(state)) = (wire, &g.agg) {
        super::aggregate::wire::put_state_field(16, state, group_buf);
    }
}

/// The stamps a decoded group carries (`Stamps::whole` when it carries none), checked against
/// each other and the group's version, so that a file or a peer cannot hand the merge a copy
/// no sequence of writes leaves: every part at most `version` and `version` one of them,
/// families none older than the reset and none newer than the push time, times none older than
/// the last delete, and at least one time (a group without a push or a failure is a
/// tombstone, which travels as one). Every stamp 0 (as a copy of version 0, an import body,
/// encodes) counts as none.
fn decoded_stamps(g: &snapshot_proto::Group, families: usize) -> Result<Stamps, String> {
    let none = g.reset == 0
        && g.cleared == 0
        && g.push_stamp == 0
        && g.failure_stamp == 0
        && g.ttl_stamp == 0
        && g.family_versions.iter().all(|&v| v == 0);
    if none {
        let times = [g.push_time, g.failure_time];
        return Ok(Stamps::whole(g.version, families, times, g.last_push_successful));
    }
    if g.family_versions.len() != families {
        return Err(format!(
            "{families} families but {} family versions",
            g.family_versions.len()
        ));
    }
    let st = Stamps {
        reset: g.reset,
        cleared: g.cleared,
        push: g.push_stamp,
        failure: g.failure_stamp,
        ttl: g.ttl_stamp,
        families: g.family_versions.clone(),
    };
    let live = |v: u64| v == 0 || v > st.cleared;
    let problem = if st.newest() != g.version {
        Some("its version is not the newest of its parts'")
    } else if st.cleared > st.reset {
        Some("its last delete is newer than its last reset")
    } else if st.push == 0 && st.failure == 0 {
        Some("it has neither a push nor a failure")
    } else if !(live(st.push) && live(st.failure) && live(st.ttl)) {
        Some("a time is older than its last delete")
    } else if st.families.iter().any(|&v| v < st.reset || v > st.push) {
        Some("a family's version is older than its reset or newer than its push")
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!("inconsistent versions: {p}")),
        None => Ok(st),
    }
}

/// The longest TTL a group may carry (about 100 years): beyond it a file's or a peer's value is
/// refused as corrupt rather than kept.
pub const MAX_TTL_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

/// A group TTL as decoded from a file or a peer (absent: never expires): finite, not
/// negative, within the bound.
pub fn checked_ttl(ttl: Option<f64>) -> Result<f64, String> {
    match ttl {
        None => Ok(0.0),
        Some(t) if (0.0..=MAX_TTL_SECONDS).contains(&t) => Ok(t),
        Some(t) => Err(format!("invalid group TTL {t} (0 to {MAX_TTL_SECONDS} seconds)")),
    }
}

/// Where each of `parts` lies in `buf` (offset, length), when every one is a slice of it (as
/// prost hands out the `bytes` fields of a message decoded from a `Bytes`); None otherwise.
/// Only addresses are compared: nothing outside `buf` is read.
fn places_in(
    buf: &bytes::Bytes,
    parts: &[bytes::Bytes],
) -> Option<(bytes::Bytes, Vec<(usize, usize)>)> {
    let base = buf.as_ptr() as usize;
    let places = parts
        .iter()
        .map(|p| {
            let at = (p.as_ptr() as usize).checked_sub(base)?;
            (at.checked_add(p.len())? <= buf.len()).then_some((at, p.len()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((buf.clone(), places))
}

/// Validates one decoded group (`i` is its position, for messages) like a persistence file's:
/// names, types and label sets are checked and the families encoded for the store.
/// With `shared`, the buffer `g` was decoded from: its encoded families are then used where
/// they lie in it (`SharedBlock`), for a copy that is rendered once and dropped; without, they
/// are copied into a block of the group's own.
pub fn decode_group(
    i: usize,
    mut g: snapshot_proto::Group,
    names: NameScheme,
    shared: Option<&bytes::Bytes>,
) -> Result<GroupSnapshot, String> {
    let family_count = g.families.len() + g.encoded_families.len();
    let stamps = decoded_stamps(&g, family_count);
    let key = GroupKey::new(
        g.key
            .into_iter()
            .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default())),
    );
    if key.get("job").is_none_or(|j| j.is_empty()) {
        return Err(format!("group #{i} has no job label"));
    }
    for (n, _) in key.labels() {
        if !crate::exposition::is_valid_label_name(n, names) {
            return Err(format!("group {key} has an invalid label name {n:?}"));
        }
    }
    let ttl = checked_ttl(g.ttl).map_err(|e| format!("group {key}: {e}"))?;
    let agg = match g.aggregate.take() {
        Some(state) => {
            let v = Validation {
                names,
                ..Validation::default()
            };
            let state = super::aggregate::codec::state_from_pb(state, &v)
                .map_err(|e| format!("aggregation state of group {key}: {e}"))?;
            // Every write in the state is part of the copy, so none is newer than the copy's
            // version (which the receiver bounds by its clock): a state cannot carry a reset
            // from the far future that would hide every later increment.
            if state.newest_stamp().version > g.version {
                return Err(format!(
                    "aggregation state of group {key} is newer than the group's version"
                ));
            }
            Some(Arc::new(state))
        }
        None => None,
    };
    let stamps = stamps.map_err(|e| format!("group {key}: {e}"))?;
    if !g.family_push_times.is_empty() && g.family_push_times.len() != family_count {
        return Err(format!(
            "group {key} has {family_count} families but {} push times",
            g.family_push_times.len()
        ));
    }
    let mut families = Vec::with_capacity(g.families.len() + g.encoded_families.len());
    if !g.encoded_families.is_empty() {
        if !g.families.is_empty() {
            return Err(format!("group {key} carries families in two forms"));
        }
        // A group's state replaces all its families, like a PUT: one block for all of them.
        let decoded = match shared.and_then(|buf| places_in(buf, &g.encoded_families)) {
            Some((buf, places)) => {
                let mut block = SharedBlock::new(buf);
                for (at, len) in places {
                    block
                        .add_wire(at, len, &key, names)
                        .map_err(|e| format!("group {key}: {e}"))?;
                }
                block.finish()
            }
            None => {
                let mut block = BlockBuilder::default();
                for raw in &g.encoded_families {
                    StoredFamily::from_wire_into(&mut block, raw, &Expect::stored(&key, names))
                        .map_err(|e| format!("group {key}: {e}"))?;
                }
                block.finish()
            }
        };
        for (fi, f) in decoded.into_iter().enumerate() {
            let pushed_at = g.family_push_times.get(fi).copied().unwrap_or(g.push_time);
            families.push(((f, pushed_at), stamps.families[fi]));
        }
    }
    for (fi, mf) in g.families.into_iter().enumerate() {
        let pushed_at = g.family_push_times.get(fi).copied().unwrap_or(g.push_time);
        let version = stamps.families[fi];
        let name = mf.name().to_owned();
        if !crate::exposition::is_valid_metric_name(&name, names) {
            return Err(format!("group {key} has an invalid metric name {name:?}"));
        }
        let typ = match mf.r#type.map(MetricType::try_from) {
            None => MetricType::Untyped,
            Some(Ok(MetricType::GaugeHistogram)) | Some(Err(_)) => {
                return Err(format!(
                    "family {name:?} of group {key} has an unsupported type"
                ))
            }
            Some(Ok(t)) => t,
        };
        let help = mf.help().to_owned();
        let mut metrics = mf.metric;
        let v = Validation {
            names,
            limits: Limits {
                max_label_name_bytes: usize::MAX,
                max_label_value_bytes: usize::MAX,
                ..Limits::default()
            },
        };
        prepare::validate_stored(&name, typ, &mut metrics, &v)
            .map_err(|e| format!("family {name:?} of group {key}: {e}"))?;
        let mf = crate::exposition::MetricFamily {
            metric: metrics,
            ..Default::default()
        };
        families.push((
            (
                StoredFamily::encode(family::intern(&name), family::intern(&help), typ, mf.metric),
                pushed_at,
            ),
            version,
        ));
    }
    families.sort_by(|a, b| a.0 .0.name.cmp(&b.0 .0.name));
    families.dedup_by(|a, b| a.0 .0.name == b.0 .0.name);
    let (families, family_versions): (Vec<_>, Vec<_>) = families.into_iter().unzip();
    Ok(GroupSnapshot {
        key: Arc::new(key),
        families,
        push_time: g.push_time,
        failure_time: g.failure_time,
        last_push_successful: stamps.push > stamps.failure,
        aggregating: agg.is_some(),
        ttl,
        version: g.version,
        stamps: Stamps {
            families: family_versions,
            ..stamps
        },
        timing: None,
        agg_digest: agg.as_ref().map_or(0, |s| s.digest()),
        agg,
    })
}
