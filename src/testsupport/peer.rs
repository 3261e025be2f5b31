//! A client speaking the cluster gRPC to a real node, blocking, for tests that send what a
//! hostile or broken member could: forwarded pushes with families laid out by hand, replicas,
//! tombstones and wipes with any version, undecodable groups.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cluster::rpc::client::PeerClients;
use crate::cluster::rpc::{pb, wire};
use crate::exposition::{MetricType, NameScheme};
use crate::store::prepare::{prepare_text, Validation, NO_STORE};
use crate::store::{GroupKey, GroupSnapshot};

/// A version `ahead` of now, in the hybrid clock's form (`unix millis << 16`).
pub fn version_in(ahead: Duration) -> u64 {
    (crate::time::unix_millis() + ahead.as_millis() as u64) << 16
}

/// The grouping key `{job=...}`.
pub fn job(job: &str) -> GroupKey {
    GroupKey::new([("job".to_string(), job.to_string())])
}

/// The wire form of every family of a text push to `key`, as a node forwards it.
pub fn families_of(key: &GroupKey, body: &str) -> Vec<Vec<u8>> {
    let parsed = crate::exposition::parse_text_borrowed(body.as_bytes(), NameScheme::Legacy)
        .expect("a test body should parse");
    let p = prepare_text(key.clone(), &parsed, true, &Validation::default(), NO_STORE)
        .expect("a test body should be a valid push");
    p.families
        .iter()
        .map(|f| {
            let mut w = Vec::new();
            f.to_wire(&mut w);
            w
        })
        .collect()
}

/// A family's wire form laid out by hand (`StoredFamily::to_wire`'s layout), one entry per
/// `(text, protobuf)`: a family no encoder would make, e.g. with lines smuggled in.
pub fn family_by_hand(name: &str, typ: MetricType, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut text, mut keys, mut proto, mut ends) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (t, p)) in entries.iter().enumerate() {
        let start = proto.len() as u32;
        text.extend_from_slice(t.as_bytes());
        keys.push(i as u8);
        proto.extend_from_slice(p);
        ends.push([text.len() as u32, keys.len() as u32, start, p.len() as u32]);
    }
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    for s in [name, ""] {
        put(&mut out, s.len() as u32);
        out.extend_from_slice(s.as_bytes());
    }
    out.push(typ as i32 as u8);
    put(&mut out, text.len() as u32);
    put(&mut out, keys.len() as u32);
    put(&mut out, (text.len() + keys.len() + proto.len()) as u32);
    out.extend_from_slice(&text);
    out.extend_from_slice(&keys);
    out.extend_from_slice(&proto);
    put(&mut out, entries.len() as u32);
    for (i, e) in ends.into_iter().enumerate() {
        for v in e {
            put(&mut out, v);
        }
        out.extend_from_slice(&(i as u128 + 1).to_le_bytes());
    }
    out
}

/// The protobuf `Metric` (as field 4 of its family) of a gauge of value 1 with `labels`.
pub fn gauge_metric(labels: &[(&str, &str)]) -> Vec<u8> {
    let m = crate::exposition::Metric {
        label: labels
            .iter()
            .map(|(n, v)| crate::exposition::LabelPair {
                name: Some((*n).into()),
                value: Some((*v).into()),
            })
            .collect(),
        gauge: Some(crate::exposition::proto::Gauge { value: Some(1.0) }),
        ..Default::default()
    };
    let mut out = Vec::new();
    prost::encoding::message::encode(4, &m, &mut out);
    out
}

/// A group's state as a replica carries it: the families of the text push `body`, at `version`.
pub fn group_of(key: &GroupKey, body: &str, version: u64) -> Vec<u8> {
    let parsed = crate::exposition::parse_text_borrowed(body.as_bytes(), NameScheme::Legacy)
        .expect("a test body should parse");
    let p = prepare_text(key.clone(), &parsed, true, &Validation::default(), NO_STORE)
        .expect("a test body should be a valid push");
    let stamps = crate::store::Stamps::whole(version, p.families.len(), [1.0, 0.0], true);
    let g = GroupSnapshot {
        key: std::sync::Arc::new(key.clone()),
        families: p.families.into_iter().map(|f| (f, 1.0)).collect(),
        push_time: 1.0,
        failure_time: 0.0,
        last_push_successful: true,
        aggregating: false,
        ttl: 0.0,
        version,
        stamps,
        timing: None,
        agg: None,
        agg_digest: 0,
    };
    wire::group_to_bytes(&g)
}

/// A blocking cluster gRPC client to one node.
pub struct PeerCall {
    rt: tokio::runtime::Runtime,
    clients: PeerClients,
    addr: SocketAddr,
}

pub use tonic::Code;

/// An error status's code and message.
pub type Refusal = (tonic::Code, String);

impl PeerCall {
    pub fn new(addr: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime should start");
        PeerCall {
            rt,
            clients: PeerClients::new(Duration::from_secs(5)),
            addr,
        }
    }

    /// The channel is made within the runtime (it spawns its connection task there).
    fn client(
        &self,
    ) -> crate::cluster::rpc::ClusterClient<crate::cluster::rpc::channel::PeerChannel> {
        let _in_runtime = self.rt.enter();
        self.clients.client(self.addr)
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        crate::cluster::rpc::client::request(msg, Duration::from_secs(5))
    }

    /// Forwards a push of `families` (wire form) to `key`, as its receiving node would; the
    /// item's error (code and message), or the HTTP status the primary answered.
    pub fn forward(&self, key: &GroupKey, families: Vec<Vec<u8>>) -> Result<u32, Refusal> {
        let w = pb::ForwardedWrite {
            key: wire::key_to_pb(key),
            families: families.into_iter().map(Into::into).collect(),
            replace_all: true,
            ..Default::default()
        };
        let reply = self.batch(pb::ForwardRequest {
            writes: vec![w],
            replicas: Vec::new(),
        })?;
        let r = reply.results.into_iter().next().unwrap_or_default();
        if r.error_code != 0 {
            return Err((tonic::Code::from(r.error_code as i32), r.error));
        }
        Ok(r.reply.map_or(0, |r| r.status))
    }

    /// One `Replicate` call: whether the node applied it.
    pub fn replicate(&self, req: pb::ReplicateRequest) -> Result<bool, Refusal> {
        let mut client = self.client();
        self.rt
            .block_on(client.replicate(self.request(req)))
            .map(|r| r.into_inner().applied)
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    /// One `Writes` batch on a call of its own: the items' answers, or the batch's refusal.
    pub fn batch(&self, batch: pb::ForwardRequest) -> Result<pb::ForwardReply, Refusal> {
        let mut client = self.client();
        self.rt
            .block_on(crate::cluster::rpc::writes::one_batch(
                &mut client,
                batch,
                Duration::from_secs(5),
            ))
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    /// A `Writes` batch of replicas alone: each item's result, an error for a refused one.
    pub fn replicate_batch(
        &self,
        items: Vec<pb::ReplicateRequest>,
    ) -> Result<Vec<Result<bool, Refusal>>, Refusal> {
        let reply = self.batch(pb::ForwardRequest {
            writes: Vec::new(),
            replicas: items,
        })?;
        Ok(reply
            .replica_results
            .into_iter()
            .map(|r| {
                if r.error_code == 0 {
                    Ok(r.applied)
                } else {
                    Err((tonic::Code::from(r.error_code as i32), r.error))
                }
            })
            .collect())
    }

    /// A tombstone of `key` at `version`, as a replica.
    pub fn tombstone(key: &GroupKey, version: u64) -> pb::ReplicateRequest {
        pb::ReplicateRequest {
            group: Default::default(),
            tombstone_key: wire::key_to_pb(key),
            version,
        }
    }

    /// A group's state `group` (encoded) at `version`, as a replica.
    pub fn group(group: Vec<u8>, version: u64) -> pb::ReplicateRequest {
        pb::ReplicateRequest {
            group: group.into(),
            tombstone_key: Vec::new(),
            version,
        }
    }

    /// A `Wipe` call at `version`.
    pub fn wipe(&self, version: u64) -> Result<(), Refusal> {
        let mut client = self.client();
        self.rt
            .block_on(client.wipe(self.request(pb::WipeRequest { version })))
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    /// A `Sync` call listing `key` at `version`.
    pub fn sync(&self, key: &GroupKey, version: u64) -> Result<(), Refusal> {
        let mut client = self.client();
        let req = pb::SyncRequest {
            entries: vec![pb::SyncEntry {
                key: wire::key_to_pb(key),
                version,
                tombstone: false,
                digest: 0,
            }],
            ..Default::default()
        };
        self.rt
            .block_on(client.sync(self.request(req)))
            .map(|_| ())
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    /// A `Sync` call carrying a summary of `buckets` buckets (and `entries` entries listing
    /// `key`, which a summary must come without): the buckets the node names as differing.
    pub fn sync_summary(
        &self,
        buckets: usize,
        key: &GroupKey,
        entries: usize,
    ) -> Result<Vec<u32>, Refusal> {
        let mut client = self.client();
        let entry = pb::SyncEntry {
            key: wire::key_to_pb(key),
            version: 1,
            tombstone: false,
            digest: 0,
        };
        let req = pb::SyncRequest {
            entries: vec![entry; entries],
            summary: vec![0; buckets],
            ..Default::default()
        };
        self.rt
            .block_on(client.sync(self.request(req)))
            .map(|r| r.into_inner().differing)
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    /// A raw gRPC message of `len` garbage bytes to `Replicate`: what the node answers.
    pub fn garbage_replicate(&self, len: usize) -> Result<bool, Refusal> {
        // An undecodable group inside a well-formed request.
        self.replicate(Self::group(vec![0xff; len], version_in(Duration::ZERO)))
    }
}
