//! The grouping key of a push group: the `job` label plus any further labels from the URL.

use std::fmt;

/// Label pairs identifying one push group, sorted by label name, `job` always present.
///
/// Ordering compares the sorted pairs lexicographically (name, then value); it is the "key order"
/// used wherever a deterministic choice between groups is needed (e.g. which HELP text is exposed).
///
/// The key's stable hash is worked out once, when the key is made: placement, the peers'
/// collect requests and every hash map of keys use it (`Hash` feeds only it to the hasher), so a
/// lookup no longer hashes every label, and two different keys almost always differ at the first
/// comparison.
#[derive(Clone)]
pub struct GroupKey {
    labels: Box<[(String, String)]>,
    hash: u64,
    instance: Instance,
}

/// Whether a key has an `instance` label, and whether its value is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instance {
    Absent,
    Empty,
    Set,
}

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.labels == other.labels
    }
}

impl Eq for GroupKey {}

impl std::hash::Hash for GroupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal keys have equal labels, hence equal stable hashes.
        state.write_u64(self.hash);
    }
}

impl PartialOrd for GroupKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.labels.cmp(&other.labels)
    }
}

impl GroupKey {
    /// Builds a key from label pairs; the last value of a repeated name wins.
    ///
    /// The caller validates names and values (see `http::grouping`); this only normalises.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut labels: Vec<(String, String)> = Vec::new();
        for (name, value) in pairs {
            match labels.iter_mut().find(|(n, _)| *n == name) {
                Some(existing) => existing.1 = value,
                None => labels.push((name, value)),
            }
        }
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        Self::of_sorted(labels)
    }

    /// A key of labels already sorted by name, each name once.
    fn of_sorted(labels: Vec<(String, String)>) -> Self {
        let labels = labels.into_boxed_slice();
        let hash = stable_hash_of(&labels);
        let instance = match labels.iter().find(|(n, _)| n == "instance") {
            None => Instance::Absent,
            Some((_, v)) if v.is_empty() => Instance::Empty,
            Some(_) => Instance::Set,
        };
        GroupKey {
            labels,
            hash,
            instance,
        }
    }

    /// The key's `instance` label: absent, empty or set (known without a lookup).
    pub fn instance(&self) -> Instance {
        self.instance
    }

    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }

    pub fn job(&self) -> &str {
        self.get("job").unwrap_or("")
    }

    /// The label set the group's own series (`push_time_seconds`, ...) carry: the key plus
    /// `instance=""` when the key has no instance. Two groups whose normalised keys are equal
    /// would expose identical timing series, so only one of them may exist.
    pub fn normalized(&self) -> GroupKey {
        if self.instance != Instance::Absent {
            return self.clone();
        }
        let pairs = self.normalized_pairs();
        Self::of_sorted(
            pairs
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// The label pairs of [`Self::normalized`], borrowed and sorted by name: the key's own,
    /// with `instance=""` in its place when the key has no instance.
    pub fn normalized_pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs = Vec::with_capacity(self.labels.len() + 1);
        let mut instance_due = self.instance == Instance::Absent;
        for (n, v) in self.labels.iter() {
            if instance_due && n.as_str() > "instance" {
                pairs.push(("instance", ""));
                instance_due = false;
            }
            pairs.push((n.as_str(), v.as_str()));
        }
        if instance_due {
            pairs.push(("instance", ""));
        }
        pairs
    }

    /// A stable byte encoding (length-prefixed pairs), used for hashing and placement.
    pub fn encode_stable(&self, out: &mut Vec<u8>) {
        encode_stable(&self.labels, out);
    }

    /// A fixed 64-bit hash of the key (xxh3 over `encode_stable`), identical on every node;
    /// worked out when the key was made.
    pub fn stable_hash(&self) -> u64 {
        self.hash
    }
}

fn encode_stable(labels: &[(String, String)], out: &mut Vec<u8>) {
    for (n, v) in labels {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
}

/// xxh3 over `encode_stable`'s bytes, laid out in a reused per-thread buffer (a key is made
/// for every push: no allocation for hashing it).
fn stable_hash_of(labels: &[(String, String)]) -> u64 {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        encode_stable(labels, &mut buf);
        let hash = xxhash_rust::xxh3::xxh3_64(&buf);
        // A very long key does not keep its buffer's size for the thread's lifetime.
        if buf.capacity() > 64 * 1024 {
            *buf = Vec::new();
        }
        hash
    })
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A key's label pairs in one allocation (names and values back to back), for a check that
/// reads many groups' keys in turn: a merged scrape's reader checks every family a peer sends
/// against its group's key, family by family, so each key comes up cold, and a `GroupKey`'s
/// names and values are an allocation each, a cache miss each (docs/benchmarks.md).
#[derive(Debug, Clone)]
pub struct PackedKey {
    text: Box<str>,
    /// Where each name and each value ends in `text`: name, value, name, value, ...
    ends: smallvec::SmallVec<[u32; 6]>,
}

impl PackedKey {
    pub fn of(key: &GroupKey) -> Self {
        let mut text = String::new();
        let mut ends = smallvec::SmallVec::new();
        for (n, v) in key.labels() {
            for s in [n, v] {
                text.push_str(s);
                // A key is bounded by the request or message it came in (far below 4 GiB).
                ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
            }
        }
        PackedKey {
            text: text.into_boxed_str(),
            ends,
        }
    }

    /// The (name, value) pairs, sorted by name as the key's.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.chunks_exact(2).map(move |e| {
            let (n, v) = (e[0] as usize, e[1] as usize);
            let pair = (
                self.text.get(start..n).unwrap_or(""),
                self.text.get(n..v).unwrap_or(""),
            );
            start = v;
            pair
        })
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_key_has_the_keys_pairs() {
        for pairs in [
            vec![],
            vec![("job", "j")],
            vec![("job", ""), ("a", "x\u{e9}y"), ("instance", "i-1"), ("z", "")],
        ] {
            let k = key(&pairs);
            let packed = PackedKey::of(&k);
            let packed: Vec<(&str, &str)> = packed.pairs().collect();
            let want: Vec<(&str, &str)> =
                k.labels().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            assert_eq!(packed, want);
        }
    }

    fn key(pairs: &[(&str, &str)]) -> GroupKey {
        GroupKey::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    #[test]
    fn sorts_and_last_value_wins() {
        let k = key(&[("job", "a"), ("b", "1"), ("b", "2")]);
        assert_eq!(
            k.labels(),
            &[("b".into(), "2".into()), ("job".into(), "a".into())]
        );
        assert_eq!(k.job(), "a");
    }

    #[test]
    fn normalized_adds_empty_instance_only_when_missing() {
        assert_eq!(
            key(&[("job", "u")]).normalized(),
            key(&[("job", "u"), ("instance", "")])
        );
        let with = key(&[("job", "u"), ("instance", "i")]);
        assert_eq!(with.normalized(), with);
    }

    const PINNED: u64 = 0x47ad_0c97_688c_7f9c;

    #[test]
    fn the_stored_hash_is_the_stable_encoding_hashed_and_order_is_the_labels_order() {
        let keys = [
            key(&[("job", "a")]),
            key(&[("job", "a"), ("instance", "")]),
            key(&[("job", "a"), ("instance", "")]).normalized(),
            key(&[("job", "a")]).normalized(),
            key(&[("job", "b"), ("x", "1")]),
            key(&[("x", "1"), ("job", "b")]),
        ];
        for k in &keys {
            let mut buf = Vec::new();
            k.encode_stable(&mut buf);
            // The fixed value every node computes (placement depends on it).
            assert_eq!(k.stable_hash(), xxhash_rust::xxh3::xxh3_64(&buf), "{k}");
        }
        // Pinned: nodes of every release place groups by this value.
        assert_eq!(keys[0].stable_hash(), PINNED);
        assert_eq!(keys[1], keys[2]);
        assert_eq!(keys[2], keys[3]);
        assert_eq!(keys[4], keys[5]);
        assert_ne!(keys[0], keys[1]);
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        assert_eq!(state.hash_one(&keys[1]), state.hash_one(&keys[3]));
        assert_eq!(state.hash_one(&keys[4]), state.hash_one(&keys[5]));
        let states: Vec<Instance> = keys.iter().map(GroupKey::instance).collect();
        use Instance::{Absent, Empty};
        assert_eq!(states, [Absent, Empty, Empty, Empty, Absent, Absent]);
        assert_eq!(
            key(&[("instance", "i"), ("job", "a")]).instance(),
            Instance::Set
        );
        // Key order: labels compared pair by pair, name then value.
        let mut sorted = [
            key(&[("job", "b")]),
            key(&[("a", "z"), ("job", "b")]),
            key(&[("job", "a"), ("z", "1")]),
            key(&[("job", "a")]),
        ];
        sorted.sort();
        let shown: Vec<String> = sorted.iter().map(|k| k.to_string()).collect();
        assert_eq!(
            shown,
            [
                r#"{a="z",job="b"}"#,
                r#"{job="a"}"#,
                r#"{job="a",z="1"}"#,
                r#"{job="b"}"#
            ]
        );
    }

    #[test]
    fn stable_hash_distinguishes_boundaries() {
        assert_ne!(
            key(&[("job", "ab"), ("x", "")]).stable_hash(),
            key(&[("job", "a"), ("x", "b")]).stable_hash()
        );
    }
}
