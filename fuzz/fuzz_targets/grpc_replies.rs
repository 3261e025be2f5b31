//! What a node decodes from its peers' answers: `Collect` chunks (a merged scrape's groups and
//! tombstones, `decode_chunks`) and `Sync` replies (newer groups and tombstones), applied to a
//! fresh store as the caller applies them (newest wins), which then renders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::cluster::decode_chunks;
use pushgate::cluster::rpc::{pb, wire};
use pushgate_fuzz::{fresh_store, render_all, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let names = scheme(sel);
    let store = fresh_store();
    if sel & 2 == 0 {
        let Ok(chunk) = pb::CollectChunk::decode(msg) else {
            return;
        };
        if let Ok(collected) = decode_chunks(vec![chunk], names, u64::MAX) {
            for (key, version) in collected.tombstones {
                store.delete_versioned(&key, version);
            }
            for g in collected.groups {
                store.apply_replica(g);
            }
        }
    } else {
        let Ok(reply) = pb::SyncReply::decode(msg) else {
            return;
        };
        for t in reply.newer_tombstones {
            if let Ok(key) = wire::key_from_pb(t.key, names) {
                store.delete_versioned(&key, t.version);
            }
        }
        for raw in &reply.newer_groups {
            if let Ok(g) = wire::group_from_bytes(raw, names) {
                store.apply_replica(g);
            }
        }
    }
    render_all(&store);
});
