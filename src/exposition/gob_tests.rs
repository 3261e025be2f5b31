use proptest::prelude::*;

use super::*;

/// Written by the upstream Pushgateway 1.5.1 (Debian's package): groups `{job="j1",inst=""}`
/// (a counter with an empty label value, a gauge, and a family POSTed later), a group whose
/// job and label came as `@base64` (a summary, a histogram and an untyped `+Inf`), `{job="j3"}`
/// and `{job="j3",x="y"}` created by a refused push (only its failure time).
const FIXTURE: &[u8] = include_bytes!("../../tests/data/upstream-1.5.1.gob");

fn fixture_groups() -> Vec<UpstreamGroup> {
    decode_upstream_file(FIXTURE).expect("the fixture should decode")
}

fn labels(g: &UpstreamGroup) -> Vec<(&str, &str)> {
    g.labels
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[test]
fn upstreams_file_decodes_into_its_groups_with_their_times() {
    assert!(looks_like_gob(FIXTURE));
    let mut groups = fixture_groups();
    groups.sort_by(|a, b| a.labels.cmp(&b.labels));
    let keys: Vec<Vec<(&str, &str)>> = groups.iter().map(labels).collect();
    assert_eq!(
        keys,
        [
            vec![("inst", ""), ("job", "j1")],
            vec![("job", "j3")],
            vec![("job", "j3"), ("x", "y")],
            vec![("job", "job/with/slash"), ("path", "/a/b")],
        ]
    );
    fn names(g: &UpstreamGroup) -> Vec<&str> {
        let mut n: Vec<&str> = g.families.iter().map(|f| f.name.as_str()).collect();
        n.sort_unstable();
        n
    }
    assert_eq!(
        names(&groups[0]),
        ["c", "g", "later", "push_failure_time_seconds", "push_time_seconds"]
    );
    assert_eq!(names(&groups[2]), ["push_failure_time_seconds", "push_time_seconds"]);
    assert_eq!(
        names(&groups[3]),
        ["h", "push_failure_time_seconds", "push_time_seconds", "s", "u"]
    );
    // Every family carries the time it was pushed: the fixture was written in December 2026.
    for f in groups.iter().flat_map(|g| &g.families) {
        let t = f.pushed_at.expect("every family has a push time");
        assert!((1.79e9..1.8e9).contains(&t), "{}: {t}", f.name);
    }
    // The POSTed family is newer than the PUT's.
    let at = |name: &str| groups[0].families.iter().find(|f| f.name == name).and_then(|f| f.pushed_at);
    assert!(at("later") > at("c"), "{:?} {:?}", at("later"), at("c"));
}

#[test]
fn go_times_of_both_versions_and_the_zero_time() {
    // 2001-09-09T01:46:40.5Z, version 1 (UTC marker -1 as the offset).
    let sec = (1_000_000_000i64 + UNIX_TO_INTERNAL) as u64;
    let mut v1 = vec![1];
    v1.extend_from_slice(&sec.to_be_bytes());
    v1.extend_from_slice(&500_000_000u32.to_be_bytes());
    v1.extend_from_slice(&(-1i16).to_be_bytes());
    assert_eq!(go_time(&v1), Ok(Some(1_000_000_000.5)));
    let mut v2 = v1.clone();
    v2[0] = 2;
    v2.push(30);
    assert_eq!(go_time(&v2), Ok(Some(1_000_000_000.5)));
    let mut zero = vec![1];
    zero.extend_from_slice(&[0; 14]);
    assert_eq!(go_time(&zero), Ok(None));
    assert!(go_time(&v1[..14]).is_err());
    assert!(go_time(&[3; 15]).is_err());
    let mut nanos = v1;
    nanos[9..13].copy_from_slice(&1_000_000_000u32.to_be_bytes());
    assert!(go_time(&nanos).is_err());
}

#[test]
fn other_shapes_are_refused_with_what_was_found() {
    // The first message defines the top-level map type: its key type is string (id 6, sent as
    // the signed integer 12). Made uint (id 3), it is a file of upstream before 1.0.
    let at = FIXTURE
        .windows(6)
        .position(|w| w == [0x01, 0x0c, 0x01, 0xff, 0x82, 0x00])
        .expect("the fixture's map definition");
    let mut old = FIXTURE.to_vec();
    old[at + 1] = 0x06;
    let err = decode_upstream_file(&old).unwrap_err().to_string();
    assert!(err.contains("not by string (files of upstream before 1.0"), "{err}");

    let mut trailing = FIXTURE.to_vec();
    trailing.extend_from_slice(&[1, 0]);
    let err = decode_upstream_file(&trailing).unwrap_err().to_string();
    assert!(err.contains("bytes after the value"), "{err}");

    // Type definitions only.
    let first_len = usize::from(FIXTURE[0]) + 1;
    let err = decode_upstream_file(&FIXTURE[..first_len]).unwrap_err().to_string();
    assert!(err.contains("ends before its value"), "{err}");

    assert!(!looks_like_gob(b""));
    // A zero-length first message, and a first message that is a value, not a type.
    assert!(!looks_like_gob(b"\x00\x01"));
    assert!(!looks_like_gob(b"\x05\x02"));
    assert!(!looks_like_gob(b"# TYPE x counter\n"));
}

#[test]
fn every_truncation_is_refused() {
    for n in 0..FIXTURE.len() {
        let err = decode_upstream_file(&FIXTURE[..n]).unwrap_err();
        assert!(err.at <= n, "{n}: {err}");
    }
}

/// The oracle of the never-panic properties: a refusal points inside the file (the byte where
/// decoding stopped), and a file that is not a gob stream at all yields no group. What a damaged
/// file decodes to when accepted has no independent oracle here: the upstream Pushgateway that
/// would read it is a process, not a library (tests/migration.rs reads real upstream files).
fn check_refusal(b: &[u8]) -> Result<(), TestCaseError> {
    match decode_upstream_file(b) {
        Err(err) => prop_assert!(err.at <= b.len(), "{err} past the end ({} bytes)", b.len()),
        Ok(groups) => prop_assert!(
            groups.is_empty() || looks_like_gob(b),
            "groups from what does not look like gob"
        ),
    }
    Ok(())
}

proptest! {
    /// Damaged files (bytes changed, removed or inserted anywhere) decode or are refused,
    /// never panic, and never allocate more than the file announces it can hold.
    #[test]
    fn damaged_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut b = FIXTURE.to_vec();
        for (at, byte, kind) in edits {
            let i = at.index(b.len());
            match kind {
                0 => b[i] = byte,
                1 => { b.remove(i); }
                _ => b.insert(i, byte),
            }
        }
        check_refusal(&b)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = looks_like_gob(&b);
        check_refusal(&b)?;
    }
}
