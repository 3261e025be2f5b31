//! `--persistence.file`: an atomic, checksummed snapshot of every group in pushgate's own
//! protobuf format (`proto/pushgate/snapshot.proto`).
//!
//! Written to a temporary file in the same directory, fsynced, renamed over the old file, and
//! the directory fsynced, so a crash at any point leaves either the old or the new snapshot.
//! Loading checks magic, length and checksum before decoding, then re-validates every group
//! through the store, so a corrupt, truncated or hand-edited file is refused with a clear
//! message instead of being half-loaded.
//!
//! Loading also reads the upstream Pushgateway's own file (Go's gob, `store::upstream`), so that
//! a gateway switched to pushgate keeps its groups; pushgate always writes its own format.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use super::aggregate::codec::state_from_pb;
use super::aggregate::wire::{put_label_pair, put_state_field};
use super::aggregate::state::AggState;
use super::codec::{decode_group, encode_group, snapshot_proto};
use super::group::GroupSnapshot;
use super::{GroupKey, PushError, Store, Validation};
use crate::exposition::NameScheme;

const MAGIC: &[u8; 8] = b"PGSNAP01";
const HEADER_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    #[error("persistence file {path:?}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("persistence file {path:?} is not a pushgate snapshot: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("persistence file {path:?} is an upstream Pushgateway file (Go gob) that cannot be read: {reason}")]
    UpstreamCorrupt { path: PathBuf, reason: String },
}

/// Which format a persistence file was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Pushgate,
    /// The upstream Pushgateway's gob file: loaded, never written.
    Upstream,
}

/// What `load` found: how many groups, in which format (None: no file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub groups: usize,
    pub format: Option<FileFormat>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistenceError + '_ {
    move |err| PersistenceError::Io {
        path: path.to_owned(),
        err,
    }
}

/// Encodes `groups`, the states of the aggregating groups among them and the store's wipe
/// watermark (0: none, not written) into the on-disk format (header plus payload).
pub fn encode_snapshot(
    groups: &[GroupSnapshot],
    aggregates: &[(GroupKey, AggState)],
    taken_at: f64,
    wipe_watermark: u64,
) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    // `Snapshot`'s field numbers (proto/pushgate/snapshot.proto), written by hand so that each
    // group is encoded once, straight into the payload.
    const TAKEN_AT: u32 = 1;
    const GROUPS: u32 = 2;
    const WIPE_WATERMARK: u32 = 3;
    const AGGREGATES: u32 = 4;
    let mut payload = Vec::new();
    prost::encoding::double::encode(TAKEN_AT, &taken_at, &mut payload);
    if wipe_watermark != 0 {
        prost::encoding::uint64::encode(WIPE_WATERMARK, &wipe_watermark, &mut payload);
    }
    let mut group_buf = Vec::new();
    for g in groups {
        group_buf.clear();
        encode_group(g, &mut group_buf);
        encode_key(GROUPS, WireType::LengthDelimited, &mut payload);
        encode_varint(group_buf.len() as u64, &mut payload);
        payload.extend_from_slice(&group_buf);
    }
    // `AggregateGroup`: the key's pairs (field 1), then the state (field 2).
    for (key, state) in aggregates {
        group_buf.clear();
        for (n, v) in key.labels() {
            put_label_pair(1, n, v, &mut group_buf);
        }
        put_state_field(2, state, &mut group_buf);
        encode_key(AGGREGATES, WireType::LengthDelimited, &mut payload);
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

/// What a snapshot holds, each part checked.
#[derive(Debug, Default)]
pub struct Decoded {
    pub groups: Vec<GroupSnapshot>,
    /// The state of each aggregating group among `groups`.
    pub aggregates: Vec<(GroupKey, AggState)>,
    /// The watermark of the last cluster-wide wipe the writer knew of (0: none).
    pub wiped_at: u64,
}

/// Decodes and validates a snapshot file's bytes.
pub fn decode_snapshot(
    path: &Path,
    bytes: &[u8],
    names: NameScheme,
) -> Result<Decoded, PersistenceError> {
    decode_snapshot_bytes(bytes, names).map_err(|reason| PersistenceError::Corrupt {
        path: path.to_owned(),
        reason,
    })
}

/// [`decode_snapshot`] of bytes that are not a file (an import request's body); the error says
/// why they are not a snapshot.
pub fn decode_snapshot_bytes(
    bytes: &[u8],
    names: NameScheme,
) -> Result<Decoded, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "file has {} bytes, shorter than the {HEADER_LEN}-byte header (truncated?)",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(
            "wrong magic bytes (neither a pushgate snapshot nor an upstream Pushgateway file, or a different format version)".into(),
        );
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("slice of 8 bytes"));
    let sum = u64::from_le_bytes(bytes[16..24].try_into().expect("slice of 8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != len {
        return Err(format!(
            "header announces {len} payload bytes but the file holds {} (truncated or appended to)",
            payload.len()
        ));
    }
    if xxhash_rust::xxh3::xxh3_64(payload) != sum {
        return Err("checksum mismatch (the file is corrupted)".into());
    }
    let snap = snapshot_proto::Snapshot::decode(payload)
        .map_err(|e| format!("undecodable payload: {e}"))?;
    let mut out = Vec::with_capacity(snap.groups.len());
    for (i, mut g) in snap.groups.into_iter().enumerate() {
        // A file keeps the states apart (`aggregates`, below); one inside a group is not read.
        g.aggregate = None;
        out.push(decode_group(i, g, names, None)?);
    }
    let v = Validation {
        names,
        ..Validation::default()
    };
    let mut aggregates = Vec::with_capacity(snap.aggregates.len());
    for a in snap.aggregates {
        let key = GroupKey::new(
            a.key
                .into_iter()
                .map(|lp| (lp.name.unwrap_or_default(), lp.value.unwrap_or_default())),
        );
        let state = state_from_pb(a.state.unwrap_or_default(), &v)
            .map_err(|e| format!("aggregation state of group {key}: {e}"))?;
        aggregates.push((key, state));
    }
    Ok(Decoded {
        groups: out,
        aggregates,
        wiped_at: snap.wipe_watermark,
    })
}

/// Decodes a persistence file in either format: pushgate's snapshot (its magic bytes first),
/// or else the upstream Pushgateway's gob file when it begins like one (groups only: it has no
/// aggregating groups and no wipe watermark).
pub fn decode_file(
    path: &Path,
    bytes: &[u8],
    names: NameScheme,
) -> Result<(Decoded, FileFormat), PersistenceError> {
    if !bytes.starts_with(MAGIC) && crate::exposition::gob::looks_like_gob(bytes) {
        let groups = super::upstream::groups_from_upstream_file(bytes, names).map_err(|reason| {
            PersistenceError::UpstreamCorrupt {
                path: path.to_owned(),
                reason,
            }
        })?;
        let decoded = Decoded {
            groups,
            ..Decoded::default()
        };
        return Ok((decoded, FileFormat::Upstream));
    }
    Ok((decode_snapshot(path, bytes, names)?, FileFormat::Pushgate))
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
        let mut f = create_private(&tmp).map_err(io_err(&tmp))?;
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

/// Creates `path` readable and writable by its owner only (0600): the snapshot holds every
/// pushed metric, which may be more than the pushers meant for other local users. The file is
/// made anew (a stale temporary file of a crashed process with the same pid is removed first),
/// so the mode is the one given here and not an old file's.
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Saves the whole store to `path`.
pub fn save(store: &Store, path: &Path) -> Result<usize, PersistenceError> {
    // The watermark first: a wipe between the reads then removes groups the file still holds
    // under it, which the next load removes again (`learn_wipe`). The aggregating states after
    // the groups: a state is never older than the families it exposes, and a load keeps the
    // state (the next push exposes it).
    let wiped_at = store.wiped_at();
    let groups = store.snapshot();
    let aggregates = store.aggregate_states();
    let bytes = encode_snapshot(&groups, &aggregates, crate::time::unix_seconds(), wiped_at);
    write_atomically(path, &bytes)?;
    Ok(groups.len())
}

/// Reads and decodes a persistence file in either format; None when it does not exist.
pub fn read_file(
    path: &Path,
    names: NameScheme,
) -> Result<Option<(Decoded, FileFormat)>, PersistenceError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(io_err(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    }
    decode_file(path, &bytes, names).map(Some)
}

/// Loads `path` (either format) into `store`. A missing file is an empty store; anything
/// unreadable is an error, and nothing of it is loaded.
pub fn load(store: &Store, path: &Path, names: NameScheme) -> Result<Loaded, PersistenceError> {
    let Some((decoded, format)) = read_file(path, names)? else {
        return Ok(Loaded {
            groups: 0,
            format: None,
        });
    };
    let Decoded {
        groups,
        aggregates,
        wiped_at,
    } = decoded;
    let refused = |key: &GroupKey, e: PushError| PersistenceError::Corrupt {
        path: path.to_owned(),
        reason: format!("group {key} cannot be restored: {e}"),
    };
    for g in groups {
        let key = g.key.clone();
        store.restore(g).map_err(|e| refused(&key, e))?;
    }
    let v = Validation {
        names,
        ..Validation::default()
    };
    for (key, state) in aggregates {
        let installed = store
            .install_aggregate(key.clone(), state, &v)
            .map_err(|e| refused(&key, e))?;
        if !installed {
            tracing::debug!(group = %key, "aggregation state of a group the file does not hold, skipped");
        }
    }
    // Merged like a wipe learnt from a peer: nothing written at or before it stays.
    store.learn_wipe(wiped_at);
    Ok(Loaded {
        groups: store.group_count(),
        format: Some(format),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse_text;
    use crate::store::{prepare_push, render::Format, GroupKey, StoreOptions, Validation};

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
        assert_eq!(load(&t, &path, NameScheme::Legacy).unwrap().groups, 2);
        assert_eq!(text(&s), text(&t));
        let (a, b) = (s.snapshot(), t.snapshot());
        assert_eq!(a[0].failure_time, b[0].failure_time);
        assert_eq!(a[0].last_push_successful, b[0].last_push_successful);
        assert_eq!(a[0].families[0].1, b[0].families[0].1);
        // no temporary file left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A cluster node's wipe watermark survives a restart from its file, and a file written
    /// before a wipe (its groups, no watermark) loads into a store that then learns the wipe
    /// and keeps only what was written after it.
    #[test]
    fn the_wipe_watermark_is_persisted_and_merges_with_a_file_from_before_the_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("before");
        let s = filled_store();
        save(&s, &before).unwrap();
        let watermark = s.wipe_versioned(s.max_version() + 1);
        let after = dir.path().join("after");
        assert_eq!(save(&s, &after).unwrap(), 0);
        let t = Store::new(StoreOptions::default());
        assert_eq!(load(&t, &after, NameScheme::Legacy).unwrap().groups, 0);
        assert_eq!(t.wiped_at(), watermark, "the watermark is loaded back");
        // The file from before the wipe: its groups load, and learning the wipe removes them.
        let u = Store::new(StoreOptions::default());
        assert_eq!(load(&u, &before, NameScheme::Legacy).unwrap().groups, 2);
        assert_eq!(u.learn_wipe(watermark), 2);
        assert_eq!(u.group_count(), 0);
        assert_eq!(u.learn_wipe(watermark - 1), 0, "an older watermark changes nothing");
        assert_eq!(u.wiped_at(), watermark);
    }

    #[test]
    fn snapshots_and_their_temporary_files_are_private_to_the_owner() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t2.snap");
        // An older file readable by everyone, and a stale temporary file of a crashed process
        // with this pid, both world-readable: neither mode survives the write.
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let stale = dir
            .path()
            .join(format!(".t2.snap.tmp-{}", std::process::id()));
        std::fs::write(&stale, b"stale").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o666)).unwrap();
        save(&filled_store(), &path).unwrap();
        // The file in place is the temporary file renamed: its mode is the one it was created
        // with.
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "snapshot mode {mode:o}");
        assert!(!stale.exists(), "temporary file left behind");
        let t = Store::new(StoreOptions::default());
        assert_eq!(load(&t, &path, NameScheme::Legacy).unwrap().groups, 2);
        // The temporary file itself, before any rename.
        let f = create_private(&stale).unwrap();
        let mode = f.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "temporary file mode {mode:o}");
    }

    #[test]
    fn missing_file_is_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let t = Store::new(StoreOptions::default());
        assert_eq!(
            load(&t, &dir.path().join("none"), NameScheme::Legacy).unwrap().groups,
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

    /// `bytes` behind a valid header (length and checksum), as the writer would frame them.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        b.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    /// A store unlike `filled_store`, to load damaged files into.
    fn other_store() -> Store {
        let s = Store::new(StoreOptions::default());
        let fams = parse_text(b"# TYPE z gauge\nz 7\n".as_slice(), NameScheme::Legacy).unwrap();
        let key = GroupKey::new([("job".to_owned(), "z".to_owned())]);
        s.push(prepare_push(key, fams, true, &Validation::default()).unwrap(), 99.0).unwrap();
        s
    }

    /// Re-encodes what was decoded (the taken-at time is not part of what a snapshot restores).
    fn reencoded(d: &Decoded) -> Vec<u8> {
        encode_snapshot(&d.groups, &d.aggregates, 0.0, d.wiped_at)
    }

    /// Properly framed payloads, random or a real snapshot's with bytes changed or cut: what
    /// decodes re-encodes and decodes again to the same snapshot (a fixed point, byte for
    /// byte), and loads into an empty store completely or not at all; what does not decode is
    /// refused with a reason and leaves a filled store as it was.
    #[test]
    fn what_decodes_is_a_fixed_point_and_what_does_not_changes_nothing() {
        use proptest::prelude::*;
        let good = encode_snapshot(&filled_store().snapshot(), &[], 1.0, 5);
        let payload = good[HEADER_LEN..].to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let inputs = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            (
                proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
                any::<prop::sample::Index>(),
                any::<bool>(),
            )
                .prop_map(move |(edits, cut, do_cut)| {
                    let mut p = payload.clone();
                    for (at, byte) in edits {
                        let i = at.index(p.len());
                        p[i] = byte;
                    }
                    if do_cut {
                        p.truncate(cut.index(p.len() + 1));
                    }
                    p
                }),
        ];
        // How many cases decoded to groups: the fixed point must not hold only vacuously.
        let decoded = std::sync::atomic::AtomicUsize::new(0);
        proptest!(|(payload in inputs)| {
            let bytes = framed(&payload);
            let filled = other_store();
            let before = text(&filled);
            std::fs::write(&path, &bytes).unwrap();
            match decode_snapshot_bytes(&bytes, NameScheme::Legacy) {
                Ok(first) => {
                    if !first.groups.is_empty() {
                        decoded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let once = reencoded(&first);
                    let second = decode_snapshot_bytes(&once, NameScheme::Legacy)
                        .unwrap_or_else(|e| panic!("a re-encoded snapshot does not decode: {e}"));
                    prop_assert_eq!(second.groups.len(), first.groups.len());
                    prop_assert_eq!(second.wiped_at, first.wiped_at);
                    prop_assert_eq!(reencoded(&second), once, "not a fixed point");
                    let empty = Store::new(StoreOptions::default());
                    match load(&empty, &path, NameScheme::Legacy) {
                        Ok(loaded) => prop_assert_eq!(loaded.groups, empty.group_count()),
                        Err(e) => {
                            prop_assert!(e.to_string().contains("cannot be restored"), "{}", e);
                            prop_assert_eq!(empty.group_count(), 0, "half-loaded: {}", e);
                        }
                    }
                }
                Err(reason) => {
                    prop_assert!(!reason.is_empty());
                    let err = load(&filled, &path, NameScheme::Legacy).unwrap_err().to_string();
                    prop_assert!(err.contains(&reason), "{} does not name {}", err, reason);
                    prop_assert_eq!(text(&filled), before, "a refused file changed the store");
                }
            }
        });
        let decoded = decoded.into_inner();
        assert!(decoded > 0, "no generated snapshot decoded to groups");
        eprintln!("generated snapshots that decoded to groups: {decoded}");
    }

    /// A real snapshot with one byte flipped anywhere, cut short or appended to is refused,
    /// with an error naming the damage, and the store it was loaded into is unchanged.
    #[test]
    fn every_damaged_file_is_refused_naming_the_damage_and_changes_nothing() {
        use proptest::prelude::*;
        let good = encode_snapshot(&filled_store().snapshot(), &[], 1.0, 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let n = good.len();
        proptest!(|(kind in 0..3u8, at in 0..n, bit in 0..8u32, tail in proptest::collection::vec(any::<u8>(), 1..64))| {
            let mut bytes = good.clone();
            let expected: &[&str] = match kind {
                0 => {
                    bytes[at] ^= 1 << bit;
                    match at {
                        0..8 => &["wrong magic", "upstream Pushgateway file"],
                        8..16 => &["header announces"],
                        _ => &["checksum mismatch"],
                    }
                }
                1 => {
                    bytes.truncate(at);
                    if at < HEADER_LEN {
                        &["shorter than the 24-byte header", "upstream Pushgateway file"]
                    } else {
                        &["header announces"]
                    }
                }
                _ => {
                    bytes.extend_from_slice(&tail);
                    &["header announces"]
                }
            };
            std::fs::write(&path, &bytes).unwrap();
            let store = other_store();
            let before = text(&store);
            let err = load(&store, &path, NameScheme::Legacy).unwrap_err().to_string();
            prop_assert!(expected.iter().any(|e| err.contains(e)), "{}: {}", at, err);
            prop_assert_eq!(text(&store), before);
            prop_assert_eq!(store.wiped_at(), 0);
        });
    }
}
