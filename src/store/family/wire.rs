//! The node-to-node form of a family (`StoredFamily::to_wire`) and its checked decoding, into
//! a block of the node's own or in place in the received message (`SharedBlock`).

use bytes::Bytes;

use super::builder::BlockBuilder;
use super::hash::layout_of;
use super::intern::intern;
use super::layout::{offset, Entry, FamilyHead, StoredFamily};
use super::peer_check::{Expect, Grouping};
use crate::exposition::MetricType;
use crate::exposition::NameScheme;
use crate::store::GroupKey;

/// Families read from a peer's message in place: their block is the message's buffer itself
/// (shared, not copied), for families that are rendered once and dropped (a merged scrape's
/// copies); what a node keeps goes through [`BlockBuilder`], which packs it into a block of
/// its own instead of holding a whole message alive.
pub struct SharedBlock {
    bytes: Bytes,
    heads: Vec<FamilyHead>,
}

impl SharedBlock {
    pub fn new(bytes: Bytes) -> Self {
        SharedBlock {
            bytes,
            heads: Vec::new(),
        }
    }

    /// Checks and adds the family in wire form at `[at..at + len]` of the buffer (see
    /// [`StoredFamily::from_wire`]); nothing is added when it is refused.
    pub fn add_wire<'k>(
        &mut self,
        at: usize,
        len: usize,
        key: impl Into<Grouping<'k>>,
        names: NameScheme,
    ) -> Result<(), String> {
        let b = at
            .checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or("family outside its message")?;
        // A copy rendered once (a merged scrape's) may come without its protobuf part.
        let expect = Expect {
            proto: false,
            ..Expect::stored(key, names)
        };
        let w = WireFamily::read(b, &expect)?;
        let (base, count) = (at, w.entries.len());
        self.heads.push(FamilyHead {
            name: intern(w.name),
            help: intern(w.help),
            typ: w.typ,
            entries_at: offset(base + w.entries_at),
            data_at: offset(base + w.data.start),
            end: offset(base + w.data.end),
            count: offset(count),
            text_len: offset(w.text_len),
            proto_at: offset(w.proto_at),
            layout: layout_of(&w.entries),
        });
        Ok(())
    }

    /// The families, one handle each in the order they were added.
    pub fn finish(self) -> Vec<StoredFamily> {
        let n = self.heads.len();
        if n == 0 {
            return Vec::new();
        }
        let block = triomphe::ThinArc::from_header_and_iter(self.bytes, self.heads.into_iter());
        (0..n)
            .map(|i| StoredFamily {
                block: block.clone(),
                idx: offset(i),
            })
            .collect()
    }
}

/// A family in wire form, checked: its fields, and where its parts are in the bytes read.
struct WireFamily<'a> {
    name: &'a str,
    help: &'a str,
    typ: MetricType,
    text_len: usize,
    proto_at: usize,
    /// `text ‖ keys ‖ proto`.
    data: std::ops::Range<usize>,
    /// Where the entries start (`ENTRY_BYTES` each, in the layout `Entry::write` gives).
    entries_at: usize,
    entries: Vec<Entry>,
}

impl<'a> WireFamily<'a> {
    /// Reads `StoredFamily::to_wire`'s form, checking every offset and that the family renders
    /// as valid exposition of this group (`peer_check`), so a malformed message is an error,
    /// never a panic or a broken exposition.
    fn read(b: &'a [u8], expect: &Expect<'_>) -> Result<Self, String> {
        let names = expect.names;
        struct R<'a>(&'a [u8]);
        impl<'a> R<'a> {
            fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
                if self.0.len() < n {
                    return Err("truncated encoded family".into());
                }
                let (a, rest) = self.0.split_at(n);
                self.0 = rest;
                Ok(a)
            }
            fn u32(&mut self) -> Result<u32, String> {
                let a = self.take(4)?;
                Ok(u32::from_le_bytes([a[0], a[1], a[2], a[3]]))
            }
            fn str(&mut self) -> Result<&'a str, String> {
                let n = self.u32()? as usize;
                std::str::from_utf8(self.take(n)?).map_err(|_| "non-UTF-8 name or help".to_string())
            }
        }
        let mut r = R(b);
        let name = r.str()?;
        let help = r.str()?;
        if !crate::exposition::is_valid_metric_name(name, names) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let typ = match MetricType::try_from(i32::from(r.take(1)?[0])) {
            Ok(MetricType::GaugeHistogram) | Err(_) => return Err("unsupported metric type".into()),
            Ok(t) => t,
        };
        let text_len = r.u32()? as usize;
        let keys_len = r.u32()? as usize;
        let buf_len = r.u32()? as usize;
        let data_at = b.len() - r.0.len();
        let buf = r.take(buf_len)?;
        let proto_at = text_len
            .checked_add(keys_len)
            .filter(|&p| p <= buf.len())
            .ok_or("offsets beyond the buffer")?;
        let text =
            std::str::from_utf8(&buf[..text_len]).map_err(|_| "non-UTF-8 text".to_string())?;
        let n = r.u32()? as usize;
        let entries_at = b.len() - r.0.len();
        if n > b.len() / 32 {
            return Err("entry count larger than the message".into());
        }
        let mut entries = Vec::with_capacity(n);
        let (mut prev_text, mut prev_key, mut prev_key_start) = (0usize, 0usize, 0usize);
        let keys = &buf[text_len..proto_at];
        let proto_len_total = buf.len() - proto_at;
        for _ in 0..n {
            let (t, k, ps, pl) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            let series = u128::from_le_bytes(r.take(16)?.try_into().map_err(|_| "bad series")?);
            let (tu, ku) = (t as usize, k as usize);
            if tu <= prev_text
                || tu > text_len
                || ku < prev_key
                || ku > keys_len
                || (ps as usize)
                    .checked_add(pl as usize)
                    .is_none_or(|end| end > proto_len_total)
            {
                return Err("entry offsets out of order or out of bounds".into());
            }
            // Exposition order: sort keys never decrease (so repeated series are neighbours).
            if !entries.is_empty() && keys[prev_key_start..prev_key] > keys[prev_key..ku] {
                return Err("entries are not in exposition order".into());
            }
            // Whole lines each; what the lines are is `peer_check`'s part.
            if !text.is_char_boundary(tu) || !text[prev_text..tu].ends_with('\n') {
                return Err("text of an entry is not whole lines".into());
            }
            prev_text = tu;
            prev_key_start = prev_key;
            prev_key = ku;
            entries.push(Entry {
                text_end: t,
                key_end: k,
                proto_start: ps,
                proto_len: pl,
                series,
            });
        }
        if prev_text != text_len || prev_key != keys_len || !r.0.is_empty() {
            return Err("encoded family has trailing or unaccounted bytes".into());
        }
        let proto = &buf[proto_at..];
        super::peer_check::check(
            name,
            typ,
            text,
            entries.iter().map(|e| e.text_end as usize),
            proto,
            expect,
        )?;
        if !proto.is_empty() {
            super::peer_check::check_proto_ranges(
                name,
                proto,
                entries
                    .iter()
                    .map(|e| (e.proto_start as usize, e.proto_len as usize)),
            )?;
        }
        Ok(WireFamily {
            name,
            help,
            typ,
            text_len,
            proto_at,
            data: data_at..data_at + buf_len,
            entries_at,
            entries,
        })
    }
}

impl StoredFamily {
    /// The node-to-node form: the encodings exactly as held, so a peer does not re-encode.
    /// Layout (little endian): name, help (u32 length + bytes each), type (u8), text length,
    /// key length, buffer (u32 length + bytes), entry count (u32), then per entry
    /// text_end, key_end, proto_start, proto_len (u32 each) and the series identity (u128).
    pub fn to_wire(&self, out: &mut Vec<u8>) {
        self.write_wire(out, true);
    }

    /// `to_wire` without the protobuf encoding (every metric's protobuf range empty): for a
    /// merged scrape in the text format, whose copies are rendered once and never stored.
    pub fn to_wire_text_only(&self, out: &mut Vec<u8>) {
        self.write_wire(out, false);
    }

    fn write_wire(&self, out: &mut Vec<u8>, with_proto: bool) {
        let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
        for s in [&*self.name, &*self.help] {
            put(out, offset(s.len()));
            out.extend_from_slice(s.as_bytes());
        }
        out.push(self.typ as i32 as u8);
        put(out, self.text_len);
        put(out, self.proto_at - self.text_len);
        let data = if with_proto {
            self.data()
        } else {
            &self.data()[..self.proto_at as usize]
        };
        put(out, offset(data.len()));
        out.extend_from_slice(data);
        put(out, self.count);
        for e in self.entries() {
            let (proto_start, proto_len) = if with_proto {
                (e.proto_start, e.proto_len)
            } else {
                (0, 0)
            };
            for v in [e.text_end, e.key_end, proto_start, proto_len] {
                put(out, v);
            }
            out.extend_from_slice(&e.series.to_le_bytes());
        }
    }

    /// The length of `to_wire_text_only`'s output.
    pub fn wire_len_text_only(&self) -> usize {
        self.wire_len() - (self.data().len() - self.proto_at as usize)
    }

    /// The length of `to_wire`'s output.
    pub fn wire_len(&self) -> usize {
        4 + self.name.len() + 4 + self.help.len() + 1 + 4 * 4 + self.heap_bytes()
    }

    /// Reads `to_wire`'s form from a peer, for the group `key`, checking every offset and that
    /// the family renders as valid exposition of that group, so a malformed message is an
    /// error, never a panic or a broken exposition.
    pub fn from_wire(b: &[u8], key: &GroupKey, names: NameScheme) -> Result<StoredFamily, String> {
        let mut block = BlockBuilder::default();
        Self::from_wire_into(&mut block, b, &Expect::stored(key, names))?;
        Ok(block.finish_one())
    }

    /// [`Self::from_wire`] into `block`, after the families already there (nothing is added
    /// when `b` is refused), checked as `expect` says.
    pub fn from_wire_into(
        block: &mut BlockBuilder,
        b: &[u8],
        expect: &Expect<'_>,
    ) -> Result<(), String> {
        let w = WireFamily::read(b, expect)?;
        let data = &b[w.data.clone()];
        block.add(
            intern(w.name),
            intern(w.help),
            w.typ,
            &w.entries,
            w.text_len,
            w.proto_at,
            data.len(),
            |out| out.extend_from_slice(data),
        );
        Ok(())
    }
}
