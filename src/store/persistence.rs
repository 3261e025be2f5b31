//! `--persistence.file`: an atomic, checksummed snapshot of every group in pushgate's own
//! protobuf format (`proto/pushgate/snapshot.proto`).
//!
//! Written to a temporary file in the same directory, fsynced, renamed over the old file, and
//! the directory fsynced, so a crash at any point leaves either the old or the new snapshot.
//! Loading checks magic, length and checksum before decoding, then re-validates every group
//! through the store, so a corrupt, truncated or hand-edited file is refused with a clear
//! message instead of being half-loaded.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use super::family::{encode_family_header, BlockBuilder, SharedBlock, StoredFamily};
use super::group::GroupSnapshot;
use super::key::GroupKey;
use super::prepare::{Limits, Validation};
use super::Store;
use crate::exposition::{names::NameScheme, MetricType};

/// Generated from proto/pushgate/snapshot.proto.
#[allow(clippy::all, missing_docs)]
pub mod snapshot_proto {
    include!(concat!(env!("OUT_DIR"), "/pushgate.snapshot.rs"));
}

const MAGIC: &[u8; 8] = b"PGSNAP01";
const HEADER_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    #[error("persistence file {path:?}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("persistence file {path:?} is not a pushgate snapshot: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistenceError + '_ {
    move |err| PersistenceError::Io {
        path: path.to_owned(),
        err,
    }
}

/// Encodes `groups` into the on-disk format (header plus payload).
pub fn encode_snapshot(groups: &[GroupSnapshot], taken_at: f64) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut payload = Vec::new();
    prost::encoding::double::encode(1, &taken_at, &mut payload);
    let mut group_buf = Vec::new();
    for g in groups {
        group_buf.clear();
        encode_group(g, &mut group_buf);
        encode_key(2, WireType::LengthDelimited, &mut payload);
        encode_varint(group_buf.len() as u64, &mut payload);
        payload.extend_from_slice(&group_buf);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

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
}

/// Decodes and validates a snapshot file's bytes into groups.
pub fn decode_snapshot(
    path: &Path,
    bytes: &[u8],
    names: NameScheme,
) -> Result<Vec<GroupSnapshot>, PersistenceError> {
    let corrupt = |reason: String| PersistenceError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "file has {} bytes, shorter than the {HEADER_LEN}-byte header (truncated?)",
            bytes.len()
        )));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt(
            "wrong magic bytes (not written by pushgate, or a different format version)".into(),
        ));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("slice of 8 bytes"));
    let sum = u64::from_le_bytes(bytes[16..24].try_into().expect("slice of 8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(corrupt(format!(
            "header announces {len} payload bytes but the file holds {} (truncated or appended to)",
            payload.len()
        )));
    }
    if xxhash_rust::xxh3::xxh3_64(payload) != sum {
        return Err(corrupt("checksum mismatch (the file is corrupted)".into()));
    }
    let snap = snapshot_proto::Snapshot::decode(payload)
        .map_err(|e| corrupt(format!("undecodable payload: {e}")))?;
    let mut out = Vec::with_capacity(snap.groups.len());
    for (i, g) in snap.groups.into_iter().enumerate() {
        out.push(decode_group(i, g, names, None).map_err(corrupt)?);
    }
    Ok(out)
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
    g: snapshot_proto::Group,
    names: NameScheme,
    shared: Option<&bytes::Bytes>,
) -> Result<GroupSnapshot, String> {
    let key = GroupKey::new(
        g.key
            .into_iter()
            .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default())),
    );
    if key.get("job").is_none_or(|j| j.is_empty()) {
        return Err(format!("group #{i} has no job label"));
    }
    for (n, _) in key.labels() {
        if !crate::exposition::names::is_valid_label_name(n, names) {
            return Err(format!("group {key} has an invalid label name {n:?}"));
        }
    }
    let family_count = g.families.len() + g.encoded_families.len();
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
                        .add_wire(at, len, names)
                        .map_err(|e| format!("group {key}: {e}"))?;
                }
                block.finish()
            }
            None => {
                let mut block = BlockBuilder::default();
                for raw in &g.encoded_families {
                    StoredFamily::from_wire_into(&mut block, raw, names)
                        .map_err(|e| format!("group {key}: {e}"))?;
                }
                block.finish()
            }
        };
        for (fi, f) in decoded.into_iter().enumerate() {
            let pushed_at = g.family_push_times.get(fi).copied().unwrap_or(g.push_time);
            families.push((f, pushed_at));
        }
    }
    for (fi, mf) in g.families.into_iter().enumerate() {
        let pushed_at = g.family_push_times.get(fi).copied().unwrap_or(g.push_time);
        let name = mf.name().to_owned();
        if !crate::exposition::names::is_valid_metric_name(&name, names) {
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
        super::prepare::validate_stored(&name, typ, &mut metrics, &v)
            .map_err(|e| format!("family {name:?} of group {key}: {e}"))?;
        let mf = crate::exposition::MetricFamily {
            metric: metrics,
            ..Default::default()
        };
        families.push((
            StoredFamily::encode(
                super::family::intern(&name),
                super::family::intern(&help),
                typ,
                mf.metric,
            ),
            pushed_at,
        ));
    }
    families.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    families.dedup_by(|a, b| a.0.name == b.0.name);
    Ok(GroupSnapshot {
        key: Arc::new(key),
        families,
        push_time: g.push_time,
        failure_time: g.failure_time,
        last_push_successful: g.last_push_successful,
        version: g.version,
        timing: None,
    })
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PersistenceError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Saves the whole store to `path`.
pub fn save(store: &Store, path: &Path) -> Result<usize, PersistenceError> {
    let groups = store.snapshot();
    let bytes = encode_snapshot(&groups, crate::time::unix_seconds());
    write_atomically(path, &bytes)?;
    Ok(groups.len())
}

/// Loads `path` into `store`. A missing file is an empty store; anything unreadable is an error.
pub fn load(store: &Store, path: &Path, names: NameScheme) -> Result<usize, PersistenceError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    }
    let groups = decode_snapshot(path, &bytes, names)?;
    let n = groups.len();
    for g in groups {
        let key = g.key.clone();
        store.restore(g).map_err(|e| PersistenceError::Corrupt {
            path: path.to_owned(),
            reason: format!("group {key} cannot be restored: {e}"),
        })?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse_text;
    use crate::store::{prepare_push, render::Format, StoreOptions, Validation};

    fn filled_store() -> Store {
        let s = Store::new(StoreOptions::default());
        for (job, body) in [
            ("a", "# HELP x some help\n# TYPE x counter\nx{l=\"1\"} 1\nx{l=\"2\"} 2\n"),
            ("b", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"),
        ] {
            let fams = parse_text(body.as_bytes(), NameScheme::Legacy).unwrap();
            let key = GroupKey::new([("job".to_owned(), job.to_owned())]);
            s.push(prepare_push(key, fams, true, &Validation::default()).unwrap(), 1234.5).unwrap();
        }
        s.record_failure(&GroupKey::new([("job".to_owned(), "a".to_owned())]), 2000.0);
        s
    }

    fn text(s: &Store) -> String {
        let mut out = Vec::new();
        s.render(Format::Text, &[], &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let s = filled_store();
        assert_eq!(save(&s, &path).unwrap(), 2);
        let t = Store::new(StoreOptions::default());
        assert_eq!(load(&t, &path, NameScheme::Legacy).unwrap(), 2);
        assert_eq!(text(&s), text(&t));
        let (a, b) = (s.snapshot(), t.snapshot());
        assert_eq!(a[0].failure_time, b[0].failure_time);
        assert_eq!(a[0].last_push_successful, b[0].last_push_successful);
        assert_eq!(a[0].families[0].1, b[0].families[0].1);
        // no temporary file left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let t = Store::new(StoreOptions::default());
        assert_eq!(
            load(&t, &dir.path().join("none"), NameScheme::Legacy).unwrap(),
            0
        );
    }

    #[test]
    fn truncated_corrupt_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        save(&filled_store(), &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", good[..good.len() - 7].to_vec(), "truncated"),
            ("short", good[..10].to_vec(), "shorter than"),
            (
                "flipped",
                {
                    let mut b = good.clone();
                    let i = b.len() - 3;
                    b[i] ^= 0x40;
                    b
                },
                "checksum",
            ),
            (
                "foreign",
                b"\x00\x01gob-data-from-upstream-pushgateway.....".to_vec(),
                "magic",
            ),
            ("empty", Vec::new(), "shorter than"),
        ];
        for (what, bytes, expect) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let t = Store::new(StoreOptions::default());
            let err = load(&t, &path, NameScheme::Legacy).unwrap_err().to_string();
            assert!(err.contains(expect), "{what}: {err}");
            assert_eq!(t.group_count(), 0, "{what}: nothing may be half-loaded");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(tail in proptest::collection::vec(any::<u8>(), 0..512))| {
            // A valid header around garbage: decoding must fail cleanly, never panic.
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&(tail.len() as u64).to_le_bytes());
            b.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&tail).to_le_bytes());
            b.extend_from_slice(&tail);
            let _ = decode_snapshot(Path::new("x"), &b, NameScheme::Legacy);
        });
    }
}
