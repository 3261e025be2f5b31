//! The grouping key of a push group: the `job` label plus any further labels from the URL.

use std::fmt;

/// Label pairs identifying one push group, sorted by label name, `job` always present.
///
/// Ordering compares the sorted pairs lexicographically (name, then value); it is the "key order"
/// used wherever a deterministic choice between groups is needed (e.g. which HELP text is exposed).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    labels: Box<[(String, String)]>,
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
        GroupKey {
            labels: labels.into_boxed_slice(),
        }
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
        if self.get("instance").is_some() {
            return self.clone();
        }
        let mut labels = self.labels.to_vec();
        labels.push(("instance".to_owned(), String::new()));
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        GroupKey {
            labels: labels.into_boxed_slice(),
        }
    }

    /// A stable byte encoding (length-prefixed pairs), used for hashing and placement.
    pub fn encode_stable(&self, out: &mut Vec<u8>) {
        for (n, v) in self.labels.iter() {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }

    /// A fixed 64-bit hash of the key (xxh3 over `encode_stable`), identical on every node.
    pub fn stable_hash(&self) -> u64 {
        let mut buf = Vec::with_capacity(64);
        self.encode_stable(&mut buf);
        xxhash_rust::xxh3::xxh3_64(&buf)
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
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

    #[test]
    fn stable_hash_distinguishes_boundaries() {
        assert_ne!(
            key(&[("job", "ab"), ("x", "")]).stable_hash(),
            key(&[("job", "a"), ("x", "b")]).stable_hash()
        );
    }
}
