//! The gossip key (`--cluster.gossip-key-file`): the keys that seal and open every gossip
//! datagram, the file they are read from, and the task that re-reads it when it changes.
//!
//! A sealed datagram is `[SEALED_FORMAT] nonce(12) ciphertext tag(16)`: ChaCha20-Poly1305 with a
//! random nonce, the format byte and the cluster name as associated data, so a datagram sealed
//! for another cluster (or another format) does not open here even under the same key.
//!
//! The first key of the file seals what this node sends; every key is tried when opening, which
//! is what a rotation needs: add the new key everywhere (second), move it first everywhere,
//! remove the old one. At every step each node opens what every other node seals.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::SecureRandom;

use super::events::ClusterEvent;
pub use super::events::DropReason;

/// Bytes of one key (ChaCha20-Poly1305's key size).
pub const KEY_BYTES: usize = 32;
/// Most keys in a file: a datagram that opens with none is tried with each, and a rotation
/// needs two.
pub const MAX_KEYS: usize = 8;
/// First byte of a sealed datagram: the format (this AEAD, a random nonce carried in front).
/// Chitchat's own datagrams start with the low byte of its magic number, so an unsealed one
/// (from a node without the key) is told apart from a sealed one.
pub const SEALED_FORMAT: u8 = 1;
/// Poly1305's tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a datagram.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// The largest UDP payload over IPv4, and the largest datagram chitchat fills.
pub const MAX_DATAGRAM: usize = 65_507;
/// The largest chitchat datagram that can be sealed and still fit in [`MAX_DATAGRAM`].
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - SEAL_OVERHEAD;
/// The first two bytes of every chitchat datagram (its magic number, little-endian).
pub const CHITCHAT_MAGIC: [u8; 2] = 45_139u16.to_le_bytes();
/// How often the key file is re-read.
pub const KEY_FILE_POLL: Duration = Duration::from_secs(3);
/// Largest key file read: a few keys take a few hundred bytes; this refuses a path pointing at
/// something else (a device, a log) rather than reading it whole.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// Longer than [`MAX_PLAINTEXT`]: counted as a [`DropReason::Oversize`] drop.
    Oversize,
    /// The system's random source failed: no nonce, nothing can be sent.
    NoRandom,
}

/// The associated data of every datagram: the format byte and the cluster name.
#[derive(Clone)]
pub struct ClusterAad(Arc<[u8]>);

impl ClusterAad {
    pub fn new(cluster_name: &str) -> ClusterAad {
        let mut aad = Vec::with_capacity(1 + cluster_name.len());
        aad.push(SEALED_FORMAT);
        aad.extend_from_slice(cluster_name.as_bytes());
        ClusterAad(aad.into())
    }
}

struct GossipKey {
    key: LessSafeKey,
    /// A short fingerprint (SHA-256 of the key, first 4 bytes in hex), for the logs: which keys
    /// a node holds, in which order, without showing them.
    id: String,
}

/// The keys of one version of the key file, in its order: the first seals.
#[derive(Clone)]
pub struct GossipKeys {
    keys: Arc<[GossipKey]>,
}

impl fmt::Debug for GossipKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipKeys")
            .field("ids", &self.ids())
            .finish()
    }
}

impl GossipKeys {
    /// Parses a key file: one base64 key of [`KEY_BYTES`] bytes a line; blank lines and lines
    /// starting with `#` are ignored. Errors name the line, never its content.
    pub fn parse(text: &str) -> Result<GossipKeys, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| format!("line {n} is not base64"))?;
            if bytes.len() != KEY_BYTES {
                return Err(format!(
                    "line {n} decodes to {} bytes, a key is {KEY_BYTES} (make one with: head -c 32 /dev/urandom | base64)",
                    bytes.len()
                ));
            }
            if keys.len() == MAX_KEYS {
                return Err(format!("more than {MAX_KEYS} keys"));
            }
            let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
                .map_err(|_| format!("line {n} is not a usable key"))?;
            let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
            let id = digest.as_ref()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            keys.push(GossipKey {
                key: LessSafeKey::new(unbound),
                id,
            });
        }
        if keys.is_empty() {
            return Err(format!(
                "no key (one base64 key of {KEY_BYTES} bytes a line; make one with: head -c 32 /dev/urandom | base64)"
            ));
        }
        Ok(GossipKeys { keys: keys.into() })
    }

    /// Reads and parses the key file; also returns its bytes, so a reload can tell whether it
    /// changed.
    pub fn load(path: &Path) -> Result<(GossipKeys, Vec<u8>), String> {
        let bytes = read_capped(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        let keys = GossipKeys::parse(text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((keys, bytes))
    }

    /// The keys' fingerprints, in the file's order.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plaintext` with the first key into `out` (cleared first). A datagram that would
    /// exceed [`MAX_DATAGRAM`] is refused: chitchat fills datagrams up to that size and offers
    /// no way to ask for less, so the rare datagram within [`SEAL_OVERHEAD`] bytes of it cannot
    /// be sent sealed.
    pub fn seal(
        &self,
        aad: &ClusterAad,
        plaintext: &[u8],
        rng: &dyn SecureRandom,
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError::Oversize);
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| SealError::NoRandom)?;
        out.clear();
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self.keys[0]
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad.0[..]),
                &mut out[1 + NONCE_LEN..],
            )
            .map_err(|_| SealError::Oversize)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens a received datagram with the first key that opens it; the plaintext is left in
    /// `out` (cleared first).
    pub fn open(
        &self,
        aad: &ClusterAad,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        if datagram.starts_with(&CHITCHAT_MAGIC) {
            return Err(DropReason::Unsealed);
        }
        if datagram.first() != Some(&SEALED_FORMAT) || datagram.len() < SEAL_OVERHEAD {
            return Err(DropReason::Garbage);
        }
        let (nonce, sealed) = datagram[1..].split_at(NONCE_LEN);
        for key in self.keys.iter() {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DropReason::Garbage)?;
            out.clear();
            out.extend_from_slice(sealed);
            if let Ok(plain) = key.key.open_in_place(nonce, Aad::from(&aad.0[..]), out) {
                let len = plain.len();
                out.truncate(len);
                return Ok(());
            }
        }
        out.clear();
        Err(DropReason::Unopened)
    }
}

/// Reads at most [`MAX_KEY_FILE_BYTES`] of a file.
fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key file",
            path.display()
        ));
    }
    Ok(bytes)
}

/// The key file, loaded at start: its path, its keys (shared with the transport, swapped on
/// reload) and the bytes they were read from.
#[derive(Debug, Clone)]
pub struct GossipKeyFile {
    pub path: PathBuf,
    pub keys: Arc<ArcSwap<GossipKeys>>,
    loaded: Arc<[u8]>,
}

impl GossipKeyFile {
    /// Reads the key file; an error is for the operator at start (nothing bound yet).
    pub fn load(path: &Path) -> Result<GossipKeyFile, String> {
        let (keys, bytes) = GossipKeys::load(path)?;
        Ok(GossipKeyFile {
            path: path.to_owned(),
            keys: Arc::new(ArcSwap::from_pointee(keys)),
            loaded: bytes.into(),
        })
    }

    /// Re-reads the file every `every` until dropped (the caller aborts the task); see
    /// [`KeyFileWatch::check`].
    pub async fn watch(self, every: Duration) {
        let mut watch = KeyFileWatch::new(self);
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            watch.check();
        }
    }
}

/// What one look at the key file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileCheck {
    /// The bytes in use, or the bad version reported already.
    Unchanged,
    /// Changed and parsed: the new keys are in use.
    Reloaded,
    /// Changed but unreadable or invalid: the keys in use stay (reported once).
    Refused,
}

/// The state of the key file's reload between two looks.
pub struct KeyFileWatch {
    file: GossipKeyFile,
    /// The bytes of the keys in use.
    current: Vec<u8>,
    /// The last version refused (bytes or read error), so it is reported once.
    refused: Option<Result<Vec<u8>, String>>,
}

impl KeyFileWatch {
    pub fn new(file: GossipKeyFile) -> KeyFileWatch {
        let current = file.loaded.to_vec();
        KeyFileWatch {
            file,
            current,
            refused: None,
        }
    }

    /// Reads the file once. A changed file that parses replaces the keys at once; one that
    /// does not (or an unreadable file) keeps the keys in use and is reported once (logged at
    /// error, counted), not at every look. The file's bytes are compared rather than its
    /// modification time, whose granularity could hide a quick rewrite (e.g. two keys swapped
    /// within a second); the file is a few hundred bytes.
    pub fn check(&mut self) -> KeyFileCheck {
        let path = &self.file.path;
        let read = read_capped(path);
        if matches!(&read, Ok(bytes) if *bytes == self.current) {
            self.refused = None;
            return KeyFileCheck::Unchanged;
        }
        if self.refused.as_ref() == Some(&read) {
            return KeyFileCheck::Unchanged;
        }
        let parsed = read.clone().and_then(|bytes| {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
            GossipKeys::parse(text)
                .map(|keys| (keys, bytes))
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        match parsed {
            Ok((keys, bytes)) => {
                ClusterEvent::GossipKeysReloaded {
                    path,
                    ids: &keys.ids(),
                }
                .emit();
                self.file.keys.store(Arc::new(keys));
                self.current = bytes;
                self.refused = None;
                KeyFileCheck::Reloaded
            }
            Err(error) => {
                ClusterEvent::GossipKeysRefused {
                    path,
                    error: &error,
                }
                .emit();
                self.refused = Some(read);
                KeyFileCheck::Refused
            }
        }
    }
}

#[cfg(test)]
#[path = "gossip_key_tests.rs"]
mod tests;
