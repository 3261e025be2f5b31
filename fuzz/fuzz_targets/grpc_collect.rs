//! `Collect` as a peer calls it, answered from a store holding a few groups and a tombstone.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::cluster::rpc::pb;
use pushgate::cluster::rpc::pb::cluster_server::Cluster;
use pushgate_fuzz::{block_on, filled_store, one_node, scheme};
use tokio_stream::StreamExt;
use tonic::Request;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let Ok(req) = pb::CollectRequest::decode(msg) else {
        return;
    };
    let names = scheme(sel);
    let svc = one_node(filled_store(names), names);
    block_on(async {
        if let Ok(stream) = svc.collect(Request::new(req)).await {
            let mut stream = stream.into_inner();
            while stream.next().await.is_some() {}
        }
    });
});
