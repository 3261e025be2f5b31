//! Encoding metrics into a family: text lines and protobuf messages with the grouping key's
//! labels merged in, sorted into upstream's exposition order by a byte-comparable sort key.

use std::sync::Arc;

use super::builder::BlockBuilder;
use super::hash::series_hash_of;
use super::layout::{offset, Entry, StoredFamily};
#[cfg(test)]
use crate::exposition::proto;
use crate::exposition::{self, LabelPair, Metric, MetricType};
use crate::store::key::GroupKey;

/// Reused encoding buffers, so encoding a family allocates only its final, exact-size buffer.
#[derive(Default)]
struct Scratch {
    text: Vec<u8>,
    keys: Vec<u8>,
    proto: Vec<u8>,
    order: Vec<(u32, u32, u32, u32)>,
    idx: Vec<usize>,
    entries: Vec<Entry>,
    /// The buffers of a family's merged label pairs, kept empty between calls (see
    /// [`reborrow_empty`]), and where each metric's pairs end in it.
    pairs: Vec<(&'static str, &'static str)>,
    pair_ends: Vec<usize>,
}

/// `v` emptied, as a vector of pairs borrowed for another lifetime, on the same allocation:
/// collecting a mapped `vec::IntoIter` into a vector of an element of the same size and
/// alignment reuses the source's buffer, so a per-thread buffer of borrowed pairs can serve
/// every call without an allocation (were the buffer not reused, this would only allocate).
pub(super) fn reborrow_empty<'b>(mut v: Vec<(&str, &str)>) -> Vec<(&'b str, &'b str)> {
    v.clear();
    v.into_iter().map(|_| ("", "")).collect()
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

impl StoredFamily {
    /// Encodes `metrics` (labels already rewritten and sorted by name) in exposition order.
    pub fn encode(name: Arc<str>, help: Arc<str>, typ: MetricType, metrics: Vec<Metric>) -> Self {
        Self::encode_grouped(name, help, typ, metrics, &[])
    }

    /// [`Self::encode`] for metrics whose own labels are sorted by name and already carry the
    /// grouping key's values where they share a name with it: every metric gets the pairs of
    /// `grouping` (sorted by name, see [`grouping_pairs`]) it does not have, merged in by name,
    /// without each metric holding copies of them.
    pub fn encode_grouped(
        name: Arc<str>,
        help: Arc<str>,
        typ: MetricType,
        metrics: Vec<Metric>,
        grouping: &[(&str, &str)],
    ) -> Self {
        let mut block = BlockBuilder::default();
        Self::encode_grouped_into(&mut block, name, help, typ, &metrics, grouping);
        block.finish_one()
    }

    /// [`Self::encode_grouped`] into `block`, after the families already there. Returns the
    /// identity of a series that two of `metrics` share, if any (a push must not repeat one).
    pub fn encode_grouped_into<M: EncodeMetric>(
        block: &mut BlockBuilder,
        name: Arc<str>,
        help: Arc<str>,
        typ: MetricType,
        metrics: &[M],
        grouping: &[(&str, &str)],
    ) -> Option<u128> {
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let sc = &mut *guard;
            sc.text.clear();
            sc.keys.clear();
            sc.proto.clear();
            sc.order.clear();
            // Every metric's merged label pairs, one after the other, and where each one's end.
            let mut labels: Vec<(&str, &str)> = reborrow_empty(std::mem::take(&mut sc.pairs));
            let mut label_ends = std::mem::take(&mut sc.pair_ends);
            label_ends.clear();
            // Protobuf in push order; remember each metric's key range and proto range.
            for m in metrics {
                let start = labels.len();
                labels.extend(Merged::new(m.labels(), grouping));
                label_ends.push(labels.len());
                let pairs = &labels[start..];
                let key_start = offset(sc.keys.len());
                write_sort_key(&mut sc.keys, pairs);
                let proto_start = offset(sc.proto.len());
                m.write_proto(typ, pairs, &mut sc.proto);
                sc.order.push((
                    key_start,
                    offset(sc.keys.len()),
                    proto_start,
                    offset(sc.proto.len()),
                ));
            }
            // Upstream orders metrics by number of labels, then by label values position by
            // position; the sort key encodes exactly that, so a byte comparison suffices.
            // Stable, so equal keys keep push order.
            let keys = &sc.keys;
            let mut idx = std::mem::take(&mut sc.idx);
            idx.clear();
            idx.extend(0..metrics.len());
            idx.sort_by(|&a, &b| {
                let (ka, kb) = (sc.order[a], sc.order[b]);
                keys[ka.0 as usize..ka.1 as usize].cmp(&keys[kb.0 as usize..kb.1 as usize])
            });
            let mut entries = std::mem::take(&mut sc.entries);
            entries.clear();
            let mut sorted_keys_len = 0usize;
            for &i in &idx {
                let m = &metrics[i];
                let start = if i == 0 { 0 } else { label_ends[i - 1] };
                let pairs = &labels[start..label_ends[i]];
                m.write_text(&mut sc.text, &name, typ, pairs);
                let (ks, ke, ps, pe) = sc.order[i];
                sorted_keys_len += (ke - ks) as usize;
                entries.push(Entry {
                    text_end: offset(sc.text.len()),
                    key_end: offset(sorted_keys_len),
                    proto_start: ps,
                    proto_len: pe - ps,
                    series: series_hash_of(&name, pairs),
                });
            }
            // Identical series have identical sort keys, so they are neighbours now.
            let key = |i: usize| {
                let (ks, ke, _, _) = sc.order[i];
                &sc.keys[ks as usize..ke as usize]
            };
            let repeated = (1..entries.len())
                .find(|&j| {
                    entries[j].series == entries[j - 1].series && key(idx[j]) == key(idx[j - 1])
                })
                .map(|j| entries[j].series);
            let text_len = sc.text.len();
            let proto_at = text_len + sc.keys.len();
            let data_len = proto_at + sc.proto.len();
            block.add(
                name,
                help,
                typ,
                &entries,
                text_len,
                proto_at,
                data_len,
                |buf| {
                    buf.extend_from_slice(&sc.text);
                    for &i in &idx {
                        let (ks, ke, _, _) = sc.order[i];
                        buf.extend_from_slice(&sc.keys[ks as usize..ke as usize]);
                    }
                    buf.extend_from_slice(&sc.proto);
                },
            );
            sc.idx = idx;
            sc.entries = entries;
            sc.pairs = reborrow_empty(labels);
            sc.pair_ends = label_ends;
            repeated
        })
    }
    /// A one-sample gauge with its labels in the metric: the tests' reference for the timing
    /// families, which the store encodes from the key's borrowed labels instead
    /// (`encode_grouped`).
    #[cfg(test)]
    pub fn gauge(name: Arc<str>, help: Arc<str>, labels: &[(String, String)], value: f64) -> Self {
        let metric = Metric {
            label: labels
                .iter()
                .map(|(n, v)| proto::LabelPair {
                    name: Some(n.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            gauge: Some(proto::Gauge { value: Some(value) }),
            ..Default::default()
        };
        Self::encode(name, help, MetricType::Gauge, vec![metric])
    }

    /// A copy of a one-sample gauge family with another value: the text line and the protobuf
    /// message are patched in place (the gauge's double is fixed-width), nothing is re-encoded.
    /// Used for the push-time gauges every write updates. `None` when `self` is not such a
    /// family.
    pub fn with_gauge_value(&self, value: f64) -> Option<StoredFamily> {
        if self.typ != MetricType::Gauge || self.count != 1 {
            return None;
        }
        let text = self.text_bytes();
        let proto = self.proto_bytes();
        let space = text.iter().rposition(|&b| b == b' ')?;
        // The Metric message ends with its gauge: field 2, 9 bytes, holding field 1 as fixed64.
        if proto.len() < 11 || proto[proto.len() - 11..proto.len() - 8] != [0x12, 0x09, 0x09] {
            return None;
        }
        let mut new_text = Vec::with_capacity(space + 26);
        new_text.extend_from_slice(&text[..=space]);
        exposition::write_float(&mut new_text, value);
        new_text.push(b'\n');
        let keys = self.key_bytes();
        let mut entry = self.entry(0);
        entry.text_end = offset(new_text.len());
        let proto_at = new_text.len() + keys.len();
        let mut block = BlockBuilder::default();
        block.add(
            self.name.clone(),
            self.help.clone(),
            self.typ,
            &[entry],
            new_text.len(),
            proto_at,
            proto_at + proto.len(),
            |buf| {
                buf.extend_from_slice(&new_text);
                buf.extend_from_slice(keys);
                buf.extend_from_slice(&proto[..proto.len() - 8]);
                buf.extend_from_slice(&value.to_le_bytes());
            },
        );
        let fam = block.finish_one();
        debug_assert_eq!(fam.layout, self.layout);
        Some(fam)
    }
}

#[cfg(test)]
/// Order-preserving key: label count (big endian), then each value with 0x00 and 0x01 escaped
/// and a 0x00 terminator, so that byte order equals upstream's metric order.
pub fn sort_key(metric: &Metric) -> Vec<u8> {
    let mut key = Vec::new();
    write_sort_key(&mut key, &metric.label_pairs().collect::<Vec<_>>());
    key
}

/// The grouping key's label pairs every metric of a push gets when it lacks them, sorted by
/// name: the key's labels, and `instance=""` when the key has no `instance` label (upstream
/// adds it to every metric that has none).
pub fn grouping_pairs(key: &GroupKey) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = key
        .labels()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(at) = pairs.binary_search_by(|(n, _)| (*n).cmp("instance")) {
        pairs.insert(at, ("instance", ""));
    }
    pairs
}

/// A label pair as the encoders read it: the protobuf model's, or a parsed body's.
pub trait LabelRef {
    fn name(&self) -> &str;
    fn value(&self) -> &str;
}

impl LabelRef for LabelPair {
    fn name(&self) -> &str {
        LabelPair::name(self)
    }
    fn value(&self) -> &str {
        LabelPair::value(self)
    }
}

impl LabelRef for (&str, &str) {
    fn name(&self) -> &str {
        self.0
    }
    fn value(&self) -> &str {
        self.1
    }
}

/// A metric the store can encode: a decoded protobuf `Metric`, or a metric of a parsed text
/// body with its label pairs ([`crate::store::prepare::TextMetric`]).
pub trait EncodeMetric {
    type Label: LabelRef;
    /// The metric's own labels, sorted by name, carrying the grouping key's values where they
    /// share a name with it.
    fn labels(&self) -> &[Self::Label];
    /// Its sample lines, with `pairs` as the labels (the grouping pairs merged in).
    fn write_text(&self, out: &mut Vec<u8>, name: &str, typ: MetricType, pairs: &[(&str, &str)]);
    /// It as field 4 of a `MetricFamily` message, with `pairs` as the labels.
    fn write_proto(&self, typ: MetricType, pairs: &[(&str, &str)], out: &mut Vec<u8>);
}

impl EncodeMetric for Metric {
    type Label = LabelPair;
    fn labels(&self) -> &[LabelPair] {
        &self.label
    }
    fn write_text(&self, out: &mut Vec<u8>, name: &str, typ: MetricType, pairs: &[(&str, &str)]) {
        exposition::write_metric_labelled(out, name, typ, self, pairs);
    }
    fn write_proto(&self, _typ: MetricType, pairs: &[(&str, &str)], out: &mut Vec<u8>) {
        exposition::encode_metric_field_labelled(self, pairs, out);
    }
}

/// `body` (a metric's labels, sorted by name) merged by name with the pairs of `grouping`
/// (sorted, unique) whose names the body lacks: the same pairs in the same order as appending
/// those grouping pairs and sorting stably by name.
pub struct Merged<'a, 'g, L = LabelPair> {
    body: std::slice::Iter<'a, L>,
    extra: std::slice::Iter<'g, (&'a str, &'a str)>,
}

impl<L> Clone for Merged<'_, '_, L> {
    fn clone(&self) -> Self {
        Merged {
            body: self.body.clone(),
            extra: self.extra.clone(),
        }
    }
}

impl<'a, 'g, L: LabelRef> Merged<'a, 'g, L> {
    pub fn new(body: &'a [L], grouping: &'g [(&'a str, &'a str)]) -> Self {
        Merged {
            body: body.iter(),
            extra: grouping.iter(),
        }
    }
}

impl<'a, L: LabelRef> Iterator for Merged<'a, '_, L> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let Some(lp) = self.body.as_slice().first() else {
            return self.extra.next().copied();
        };
        let name = lp.name();
        if let Some(&(extra_name, extra_value)) = self.extra.as_slice().first() {
            if extra_name < name {
                self.extra.next();
                return Some((extra_name, extra_value));
            }
            if extra_name == name {
                // The body has this name: its value (already the key's, see prepare) wins.
                self.extra.next();
            }
        }
        self.body.next();
        Some((name, lp.value()))
    }
}

/// Appends the sort key of a metric whose label pairs (sorted by name, grouping labels merged
/// in) are `labels`.
pub fn write_sort_key(key: &mut Vec<u8>, labels: &[(&str, &str)]) {
    let n = u16::try_from(labels.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&n.to_be_bytes());
    for &(_, value) in labels {
        let value = value.as_bytes();
        if value.iter().all(|&b| b > 1) {
            // The common case: nothing to escape.
            key.extend_from_slice(value);
        } else {
            for &b in value {
                match b {
                    0 => key.extend_from_slice(&[1, 1]),
                    1 => key.extend_from_slice(&[1, 2]),
                    b => key.push(b),
                }
            }
        }
        key.push(0);
    }
}
