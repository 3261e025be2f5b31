//! A group from a peer (`group_from_bytes`, the copy held; `group_in_bytes`, the copy a merged
//! scrape renders in place), applied to a fresh store as a replica, then rendered.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate::cluster::rpc::wire::{group_from_bytes, group_in_bytes};
use pushgate_fuzz::{fresh_store, render_all, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let names = scheme(sel);
    let raw = bytes::Bytes::copy_from_slice(rest);
    for decoded in [group_from_bytes(&raw, names), group_in_bytes(&raw, names)] {
        if let Ok(g) = decoded {
            let store = fresh_store();
            store.apply_replica(g);
            render_all(&store);
        }
    }
});
