//! `Sync` and `Wipe` as a peer calls them, answered and applied by a store holding a few groups
//! and a tombstone, which then renders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::cluster::rpc::pb;
use pushgate::cluster::rpc::pb::cluster_server::Cluster;
use pushgate_fuzz::{block_on, filled_store, one_node, render_all, scheme};
use tonic::Request;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let names = scheme(sel);
    let store = filled_store(names);
    let svc = one_node(store.clone(), names);
    block_on(async {
        if sel & 2 == 0 {
            if let Ok(req) = pb::SyncRequest::decode(msg) {
                let _ = svc.sync(Request::new(req)).await;
            }
        } else if let Ok(req) = pb::WipeRequest::decode(msg) {
            let _ = svc.wipe(Request::new(req)).await;
        }
    });
    render_all(&store);
});
