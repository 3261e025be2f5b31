//! `Replicate` and a `Writes` batch of replicas alone as a peer sends them: decoded from the wire, applied by the
//! service of a one-node cluster to its fresh store, which then renders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::cluster::rpc::pb;
use pushgate::cluster::rpc::pb::cluster_server::Cluster;
use pushgate_fuzz::{block_on, fresh_store, one_node, render_all, scheme};
use tonic::Request;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let store = fresh_store();
    let svc = one_node(store.clone(), scheme(sel));
    block_on(async {
        if sel & 2 == 0 {
            if let Ok(req) = pb::ReplicateRequest::decode(msg) {
                let _ = svc.replicate(Request::new(req)).await;
            }
        } else if let Ok(req) = pb::ForwardRequest::decode(msg) {
            let n = req.replicas.len();
            let batch = pb::ForwardRequest {
                writes: Vec::new(),
                replicas: req.replicas,
            };
            if let Ok(reply) = svc.forward_batch(batch).await {
                assert_eq!(reply.replica_results.len(), n, "one result per item");
            }
        }
    });
    render_all(&store);
});
