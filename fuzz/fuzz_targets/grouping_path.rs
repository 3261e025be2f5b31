//! The grouping key of a push URL (`/job/<job>{/<label>/<value>}`, with `@base64` values).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::http::grouping::{parse_grouping_path, GroupingLimits};
use pushgate_fuzz::scheme;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let limits = GroupingLimits {
        max_labels: 16,
        max_name_bytes: 256,
        max_value_bytes: 1024,
    };
    if let Ok(key) = parse_grouping_path(rest, scheme(sel), limits) {
        assert!(
            key.get("job").is_some_and(|j| !j.is_empty()),
            "a grouping key without a job: {rest:?}"
        );
        assert!(key.labels().len() <= limits.max_labels, "{rest:?}");
    }
});
