//! The upstream Pushgateway's gob persistence file, as `--persistence.file` and `pushgate
//! import --from-file` read it: decoded (either format, as the loader tells them apart), its
//! groups restored into a fresh store, then rendered. The first byte picks the name scheme.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::store::persistence::decode_file;
use pushgate_fuzz::{fresh_store, render_all, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let Ok((decoded, _format)) = decode_file(std::path::Path::new("fuzz.data"), file, scheme(sel))
    else {
        return;
    };
    let store = fresh_store();
    for g in decoded.groups {
        let _ = store.restore(g);
    }
    render_all(&store);
});
