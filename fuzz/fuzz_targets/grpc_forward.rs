//! A `Writes` batch as a peer sends it (forwarded writes: prepared families, raw bodies, deletes,
//! failures; and the replicas that travel with them): decoded from the wire, applied by the
//! service of a one-node cluster to its fresh store, which then renders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use pushgate::cluster::rpc::pb;
use pushgate_fuzz::{block_on, fresh_store, one_node, render_all, scheme};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let Ok(req) = pb::ForwardRequest::decode(msg) else {
        return;
    };
    let store = fresh_store();
    let svc = one_node(store.clone(), scheme(sel));
    let (writes, replicas) = (req.writes.len(), req.replicas.len());
    if let Ok(reply) = block_on(svc.forward_batch(req)) {
        assert_eq!(reply.results.len(), writes, "one result per write");
        assert_eq!(
            reply.replica_results.len(),
            replicas,
            "one result per replica"
        );
    }
    render_all(&store);
});
