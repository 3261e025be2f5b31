//! The grouping key in a push URL: `/job/<job>{/<label>/<value>}`, where `job@base64` and any
//! `<label>@base64` carry URL-safe base64 values (padding optional).

use crate::exposition::{is_valid_label_name, NameScheme};
use crate::store::GroupKey;

const BASE64_SUFFIX: &str = "@base64";

/// A refused URL: always 400, with upstream's message where upstream has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GroupingError(pub String);

/// Limits on the grouping key.
#[derive(Debug, Clone, Copy)]
pub struct GroupingLimits {
    pub max_labels: usize,
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

/// Parses what follows `/metrics` in a push URL path (already percent-decoded), e.g.
/// `/job/some_job/instance/a` or `/job@base64/c29tZV9qb2I/path@base64/L3Zhci90bXA`.
pub fn parse_grouping_path(
    rest: &str,
    names: NameScheme,
    limits: GroupingLimits,
) -> Result<GroupKey, GroupingError> {
    let (job_raw, job_b64, labels) = if let Some(r) = rest.strip_prefix("/job@base64/") {
        split_job(r, true)
    } else if let Some(r) = rest.strip_prefix("/job/") {
        split_job(r, false)
    } else {
        return Err(GroupingError("path does not start with /job/".into()));
    };
    let job = if job_b64 {
        decode_base64(job_raw).map_err(|e| {
            GroupingError(format!(
                "invalid base64 encoding in job name {job_raw:?}: {e}"
            ))
        })?
    } else {
        job_raw.to_owned()
    };
    if job.is_empty() {
        return Err(GroupingError("job name is required".into()));
    }
    let mut pairs = split_labels(labels, names)?;
    if pairs.len() + 1 > limits.max_labels {
        return Err(GroupingError(format!(
            "grouping key has {} labels, more than the limit of {} (--push.max-grouping-labels)",
            pairs.len() + 1,
            limits.max_labels
        )));
    }
    pairs.push(("job".to_owned(), job));
    for (n, v) in &pairs {
        if n.len() > limits.max_name_bytes || v.len() > limits.max_value_bytes {
            return Err(GroupingError(format!(
                "grouping label {:?} exceeds the length limits ({} bytes for names, {} for values)",
                truncate(n),
                limits.max_name_bytes,
                limits.max_value_bytes
            )));
        }
    }
    // The job from the path always wins over a later `/job/x` pair: it was pushed last.
    Ok(GroupKey::new(pairs))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Splits `<job>` from `/<labels...>`; `labels` keeps its leading slash (or is empty).
fn split_job(r: &str, b64: bool) -> (&str, bool, &str) {
    match r.find('/') {
        Some(i) => (&r[..i], b64, &r[i..]),
        None => (r, b64, ""),
    }
}

fn split_labels(labels: &str, names: NameScheme) -> Result<Vec<(String, String)>, GroupingError> {
    let mut out = Vec::new();
    if labels.len() <= 1 {
        return Ok(out);
    }
    let components: Vec<&str> = labels.split('/').collect();
    if components.len() % 2 == 0 {
        return Err(GroupingError(format!(
            "odd number of components in label string {labels:?}"
        )));
    }
    let mut i = 1;
    while i + 1 < components.len() {
        let (name, value) = (components[i], components[i + 1]);
        let trimmed = name.strip_suffix(BASE64_SUFFIX).unwrap_or(name);
        if !is_valid_label_name(trimmed, names) || trimmed.starts_with("__") {
            return Err(GroupingError(format!("improper label name {trimmed:?}")));
        }
        let value = if trimmed.len() == name.len() {
            value.to_owned()
        } else {
            decode_base64(value).map_err(|e| {
                GroupingError(format!(
                    "invalid base64 encoding for label {trimmed}={value:?}: {e}"
                ))
            })?
        };
        out.push((trimmed.to_owned(), value));
        i += 2;
    }
    Ok(out)
}

/// URL-safe base64 with any number of trailing `=` (Go's RawURLEncoding after trimming), with
/// Go's error text (`illegal base64 data at input byte N`). The result must be UTF-8 (bug 10:
/// upstream stores invalid UTF-8 and breaks every later scrape).
fn decode_base64(s: &str) -> Result<String, String> {
    let input = s.trim_end_matches('=').as_bytes();
    let illegal = |i: usize| format!("illegal base64 data at input byte {i}");
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for (ci, chunk) in input.chunks(4).enumerate() {
        let base = ci * 4;
        let mut acc = 0u32;
        for (j, &c) in chunk.iter().enumerate() {
            acc |= sextet(c).ok_or_else(|| illegal(base + j))? << (18 - 6 * j);
        }
        match chunk.len() {
            4 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]),
            3 => out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8]),
            2 => out.push((acc >> 16) as u8),
            _ => return Err(illegal(base)),
        }
    }
    String::from_utf8(out).map_err(|_| "decoded value is not valid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: GroupingLimits = GroupingLimits {
        max_labels: 50,
        max_name_bytes: 1024,
        max_value_bytes: 1 << 20,
    };

    fn parse(p: &str) -> Result<Vec<(String, String)>, String> {
        parse_grouping_path(p, NameScheme::Legacy, L)
            .map(|k| k.labels().to_vec())
            .map_err(|e| e.0)
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn plain_and_base64() {
        assert_eq!(parse("/job/j").unwrap(), kv(&[("job", "j")]));
        assert_eq!(
            parse("/job/j/instance/i").unwrap(),
            kv(&[("instance", "i"), ("job", "j")])
        );
        assert_eq!(parse("/job@base64/Zm9v").unwrap(), kv(&[("job", "foo")]));
        assert_eq!(parse("/job@base64/Zm9v==").unwrap(), kv(&[("job", "foo")]));
        assert_eq!(
            parse("/job/j/path@base64/L3Zhci90bXA").unwrap(),
            kv(&[("job", "j"), ("path", "/var/tmp")])
        );
        assert_eq!(
            parse("/job/j/e@base64/=").unwrap(),
            kv(&[("e", ""), ("job", "j")])
        );
    }

    #[test]
    fn trailing_empty_value_and_overrides() {
        assert_eq!(parse("/job/j/a/").unwrap(), kv(&[("a", ""), ("job", "j")]));
        assert_eq!(parse("/job/j/job/other").unwrap(), kv(&[("job", "j")]));
        assert_eq!(
            parse("/job/j/a/1/a/2").unwrap(),
            kv(&[("a", "2"), ("job", "j")])
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse("/job@base64/=").unwrap_err(), "job name is required");
        assert_eq!(
            parse("/job/j/a").unwrap_err(),
            "odd number of components in label string \"/a\""
        );
        assert_eq!(
            parse("/job/j/1a/b").unwrap_err(),
            "improper label name \"1a\""
        );
        assert_eq!(
            parse("/job/j/__a/b").unwrap_err(),
            "improper label name \"__a\""
        );
        assert!(parse("/job@base64/!!")
            .unwrap_err()
            .starts_with("invalid base64 encoding in job name"));
        assert_eq!(
            parse("/job/j/v@base64/YWJjZ").unwrap_err(),
            "invalid base64 encoding for label v=\"YWJjZ\": illegal base64 data at input byte 4"
        );
        assert!(parse("/job/j/v@base64/Y=Q")
            .unwrap_err()
            .ends_with("input byte 1"));
        assert!(parse("/job/j/v@base64/+-8")
            .unwrap_err()
            .ends_with("input byte 0"));
        assert_eq!(
            parse("/job/j/v@base64/YWJjZA===").unwrap(),
            kv(&[("job", "j"), ("v", "abcd")])
        );
        assert!(parse("/job/j/l@base64/__4A")
            .unwrap_err()
            .contains("not valid UTF-8"));
    }

    proptest::proptest! {
        /// Any path: a key with a non-empty job within the limits, or an error; never a panic.
        #[test]
        fn any_path_is_a_valid_key_or_an_error(
            path in "(/(job|job@base64|[a-z_.]{0,4}|[a-z]{1,3}@base64|[A-Za-z0-9_=+/.@-]{0,6}|\\PC{0,3})){0,6}/?",
            utf8 in proptest::prelude::any::<bool>(),
        ) {
            let names = if utf8 { NameScheme::Utf8 } else { NameScheme::Legacy };
            let limits = GroupingLimits { max_labels: 4, max_name_bytes: 8, max_value_bytes: 16 };
            if let Ok(key) = parse_grouping_path(&path, names, limits) {
                proptest::prop_assert!(key.get("job").is_some_and(|j| !j.is_empty()), "{path:?}");
                proptest::prop_assert!(key.labels().len() <= limits.max_labels, "{path:?}");
            }
        }
    }
}
