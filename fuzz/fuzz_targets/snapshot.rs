//! The persistence file: decoded and its groups restored into a fresh store, then rendered.
//! The first byte picks the name scheme and whether the header is made right for the rest (so
//! the fuzzer gets past the checksum to the payload) or taken as it comes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::store::persistence::decode_snapshot;
use pushgate_fuzz::{fresh_store, render_all, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let names = scheme(sel);
    let file = if sel & 2 == 0 {
        let mut f = Vec::with_capacity(24 + rest.len());
        f.extend_from_slice(b"PGSNAP01");
        f.extend_from_slice(&(rest.len() as u64).to_le_bytes());
        f.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(rest).to_le_bytes());
        f.extend_from_slice(rest);
        f
    } else {
        rest.to_vec()
    };
    let Ok(decoded) = decode_snapshot(std::path::Path::new("fuzz.snap"), &file, names) else {
        return;
    };
    let store = fresh_store();
    for g in decoded.groups {
        let _ = store.restore(g);
    }
    render_all(&store);
});
