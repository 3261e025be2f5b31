//! The request path as Go's HTTP server and upstream's router see it: percent-decoded, and
//! cleaned (`//`, `.`, `..`) the way Go's `path.Clean` does before a redirect.

/// Percent-decodes a URL path; `None` for invalid escapes or non-UTF-8 results.
pub(crate) fn percent_decode(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = b.get(i + 1).copied().and_then(hex)?;
            let lo = b.get(i + 2).copied().and_then(hex)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `clean_path(p) == p`, without building the cleaned path: rooted, no empty element
/// (`//`) except a trailing slash, no `.` or `..` element. Every request's path is checked.
pub(crate) fn is_clean(p: &str) -> bool {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    for i in 1..=b.len() {
        if i == b.len() || b[i] == b'/' {
            let segment = &b[start..i];
            let last = i == b.len();
            if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
                return false;
            }
            start = i + 1;
        }
    }
    true
}

/// Go's path.Clean as httprouter uses it: one slash between elements, `.`/`..` resolved, a
/// trailing slash kept.
pub(crate) fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::with_capacity(p.len());
    out.push('/');
    out.push_str(&parts.join("/"));
    if p.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_are_recognised_without_cleaning() {
        // Every string over a small alphabet up to length 7, so `//`, `.`, `..`, trailing
        // slashes and relative paths all occur in every position.
        let alphabet = ['/', '.', 'a'];
        let mut paths = vec![String::new()];
        for _ in 0..7 {
            let longer: Vec<String> = paths
                .iter()
                .filter(|p| p.len() == paths.last().map_or(0, String::len))
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            paths.extend(longer);
        }
        assert!(paths.len() > 3000);
        for p in &paths {
            assert_eq!(is_clean(p), clean_path(p) == *p, "{p:?}");
        }
    }

    #[test]
    fn clean_path_like_go() {
        assert_eq!(clean_path("//metrics"), "/metrics");
        assert_eq!(clean_path("/a/./b/../c/"), "/a/c/");
        assert_eq!(clean_path("/"), "/");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%2Fb").as_deref(), Some("/a/b"));
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/a%ff"), None);
    }
}
