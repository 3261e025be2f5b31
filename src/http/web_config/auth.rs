//! `basic_auth_users`: bcrypt-checked credentials, with unknown users checked against a real
//! hash so that they take as long as known ones, bcrypt kept off the async runtime, and a cache
//! of successes so that a busy pusher pays bcrypt once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;
use parking_lot::Mutex;

use super::bcrypt_queue::{BcryptQueue, Refusal};
use super::file::{Ctx, WebConfigError};
use crate::telemetry::metrics as m;

/// The result of checking a request's `Authorization` header against `basic_auth_users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    Denied,
    /// The bcrypt queue is full (`--web.auth.max-pending`): 503, the client may retry.
    Busy,
    /// This client has its share of the queue pending (`--web.auth.max-pending-per-client`): 429.
    ClientBusy,
}

/// The configured users and what checking them needs.
pub(super) struct BasicAuth {
    users: HashMap<String, String>,
    /// Hash checked for unknown users so they take as long as known ones (the costliest configured).
    dummy_hash: Option<String>,
    pub(super) cache: Arc<AuthCache>,
}

impl Default for BasicAuth {
    /// No users: every request is allowed.
    fn default() -> Self {
        BasicAuth {
            users: HashMap::new(),
            dummy_hash: None,
            cache: Arc::new(AuthCache::new()),
        }
    }
}

impl BasicAuth {
    /// `basic_auth_users` as written, every hash checked to be bcrypt.
    pub(super) fn from_file(
        ctx: &Ctx<'_>,
        raw: Option<BTreeMap<String, String>>,
    ) -> Result<BasicAuth, WebConfigError> {
        let users: HashMap<String, String> = raw.unwrap_or_default().into_iter().collect();
        let mut dummy: Option<(u32, &String)> = None;
        let mut names: Vec<&String> = users.keys().collect();
        names.sort();
        for name in names {
            let hash = &users[name];
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                ctx.invalid(
                    format!("basic_auth_users: {name:?}"),
                    format!("not a bcrypt hash: {e}").to_lowercase(),
                )
            })?;
            if dummy.is_none_or(|(cost, _)| parts.get_cost() > cost) {
                dummy = Some((parts.get_cost(), hash));
            }
        }
        let dummy_hash = dummy.map(|(_, hash)| hash.clone());
        Ok(BasicAuth {
            users,
            dummy_hash,
            cache: Arc::new(AuthCache::new()),
        })
    }

    /// Whether requests need credentials.
    pub(super) fn required(&self) -> bool {
        !self.users.is_empty()
    }

    /// The user names, sorted (for `Debug`: the hashes stay out of logs).
    pub(super) fn user_names(&self) -> Vec<&String> {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        users
    }

    /// Checks basic auth on the calling thread. bcrypt takes tens of milliseconds on a miss, so async
    /// code must use [`BasicAuth::authorize_async`] instead.
    pub(super) fn authorize(&self, authorization_header: Option<&HeaderValue>) -> AuthOutcome {
        match self.prepare(authorization_header) {
            AuthCheck::Done(outcome) => outcome,
            AuthCheck::Verify(job) => job.run(),
        }
    }

    /// Checks basic auth, running bcrypt on the blocking pool through `queue` (at most one per
    /// core at a time, like exporter-toolkit's mutex; refused at once when the queue or the
    /// client's share of it is full) and remembering successes so a busy pusher pays it once.
    pub(super) async fn authorize_async(
        &self,
        authorization_header: Option<&HeaderValue>,
        client: Option<IpAddr>,
        queue: &Arc<BcryptQueue>,
    ) -> AuthOutcome {
        let job = match self.prepare(authorization_header) {
            AuthCheck::Done(outcome) => return outcome,
            AuthCheck::Verify(job) => job,
        };
        let place = match queue.enter(client) {
            Ok(place) => place,
            Err(Refusal::Full) => return AuthOutcome::Busy,
            Err(Refusal::Client) => return AuthOutcome::ClientBusy,
        };
        // A burst of requests with the same good credentials waits in the queue; only the
        // first pays bcrypt, the others find the cache filled when their turn comes.
        let cached = job.known_user && job.cache.contains(&job.cache_key);
        if cached {
            return AuthOutcome::Allowed;
        }
        place
            .run(move || {
                if job.known_user && job.cache.contains(&job.cache_key) {
                    return AuthOutcome::Allowed;
                }
                job.run()
            })
            .await
            .unwrap_or(AuthOutcome::Denied)
    }

    /// Whether checking this header would run bcrypt (it is neither cached nor decided at once).
    #[cfg(test)]
    pub(super) fn needs_bcrypt(&self, authorization_header: Option<&HeaderValue>) -> bool {
        matches!(self.prepare(authorization_header), AuthCheck::Verify(_))
    }

    fn prepare(&self, authorization_header: Option<&HeaderValue>) -> AuthCheck {
        if self.users.is_empty() {
            return AuthCheck::Done(AuthOutcome::Allowed);
        }
        let Some((user, password)) = authorization_header.and_then(parse_basic_auth) else {
            return AuthCheck::Done(AuthOutcome::Denied);
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|user| self.users.get(user));
        let (hash, known_user) = match (known, &self.dummy_hash) {
            (Some(hash), _) => (hash.clone(), true),
            (None, Some(dummy)) => (dummy.clone(), false),
            (None, None) => return AuthCheck::Done(AuthOutcome::Denied),
        };
        let cache_key = self.cache.key(&user, &hash, &password);
        if known_user && self.cache.contains(&cache_key) {
            return AuthCheck::Done(AuthOutcome::Allowed);
        }
        AuthCheck::Verify(BcryptJob {
            password,
            hash,
            known_user,
            cache_key,
            cache: Arc::clone(&self.cache),
        })
    }
}

/// `Basic <base64(user:password)>`, scheme case-insensitive as in Go's `Request.BasicAuth`.
fn parse_basic_auth(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let bytes = header.as_bytes();
    let prefix = b"basic ";
    if bytes.len() < prefix.len() || !bytes[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&bytes[prefix.len()..])
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let password = decoded[colon + 1..].to_vec();
    let mut user = decoded;
    user.truncate(colon);
    Some((user, password))
}

enum AuthCheck {
    Done(AuthOutcome),
    Verify(BcryptJob),
}

struct BcryptJob {
    password: Vec<u8>,
    hash: String,
    known_user: bool,
    cache_key: CacheKey,
    cache: Arc<AuthCache>,
}

impl BcryptJob {
    fn run(self) -> AuthOutcome {
        metrics::counter!(m::AUTH_BCRYPT_CHECKS_TOTAL).increment(1);
        // Unknown users are checked against a real hash too, then denied whatever the result.
        let matches = bcrypt::verify(&self.password, &self.hash).unwrap_or(false);
        if matches && self.known_user {
            self.cache.insert(self.cache_key);
            AuthOutcome::Allowed
        } else {
            AuthOutcome::Denied
        }
    }
}

pub(super) type CacheKey = [u8; 32];

/// Successful (user, password, hash) checks, stored as HMAC-SHA256 under a random per-process key so
/// neither the passwords nor an unsalted digest of them sit in memory. Only successes are stored, so
/// wrong guesses cannot push good entries out.
pub(super) struct AuthCache {
    key: ring::hmac::Key,
    entries: Mutex<HashSet<CacheKey>>,
}

pub(super) const AUTH_CACHE_CAPACITY: usize = 1024;

impl AuthCache {
    pub(super) fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .expect("the system random generator should be available");
        AuthCache {
            key,
            entries: Mutex::new(HashSet::new()),
        }
    }

    pub(super) fn key(&self, user: &[u8], hash: &str, password: &[u8]) -> CacheKey {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [user, hash.as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.sign().as_ref());
        key
    }

    fn contains(&self, key: &CacheKey) -> bool {
        self.entries.lock().contains(key)
    }

    pub(super) fn insert(&self, key: CacheKey) {
        let mut entries = self.entries.lock();
        if entries.len() >= AUTH_CACHE_CAPACITY && !entries.contains(&key) {
            if let Some(victim) = entries.iter().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}
