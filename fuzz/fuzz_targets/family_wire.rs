//! A forwarded push's families (`StoredFamily` wire form, `prepared_from_wire`), applied to a
//! fresh store as the primary applies them, then rendered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::cluster::rpc::wire::prepared_from_wire;
use pushgate::store::{GroupKey, PreparedPush, StoredFamily};
use pushgate_fuzz::{fresh_store, parts, render_all, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let names = scheme(sel);
    let replace_all = sel & 2 == 0;
    let has_timestamps = sel & 4 != 0;
    let key = GroupKey::new([("job".to_owned(), "fuzz".to_owned())]);
    let raw = parts(rest);
    for b in &raw {
        if let Ok(f) = StoredFamily::from_wire(b, &key, names) {
            let mut again = Vec::new();
            f.to_wire(&mut again);
            let _ = StoredFamily::from_wire(&again, &key, names);
        }
    }
    let Ok(families) = prepared_from_wire(&raw, &key, names, replace_all, has_timestamps) else {
        return;
    };
    let store = fresh_store();
    let _ = store.push(
        PreparedPush {
            key,
            families,
            replace_all,
            has_timestamps,
            aggregating: false,
            agg_digest: 0,
            ttl: 0.0,
        },
        1.0,
    );
    render_all(&store);
});
