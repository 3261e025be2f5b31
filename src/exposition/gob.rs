//! The upstream Pushgateway's persistence file (`--persistence.file` of prometheus/pushgateway
//! 1.x): one value of Go's `encoding/gob` stream format, a
//! `map[string]MetricGroup` where a `MetricGroup` is `{Labels map[string]string; Metrics
//! map[string]TimestampedMetricFamily}` and a `TimestampedMetricFamily` is `{Timestamp
//! time.Time; GobbableMetricFamily}`, both of which encode themselves (`GobEncoder`): the time
//! as `time.Time.MarshalBinary` bytes, the family as a protobuf `MetricFamily`.
//!
//! Only that shape is read. The stream's type definitions are parsed (gob sends the types a
//! value uses before it, with ids the writing process chose, so they are looked up by their
//! structure and field names, never by number) and everything else is refused with a message
//! saying what was found. Every length and count is checked against the bytes left before
//! anything is allocated, and the decoder never recurses on input, so a damaged file costs at
//! most its own size and is refused, never a panic.

use std::collections::HashMap;

/// Gob's predefined type ids (`encoding/gob/type.go`).
const STRING_ID: i64 = 6;
/// Ids below this are gob's own; a stream defines its types from 65 on.
const FIRST_USER_ID: i64 = 65;
/// Seconds from 0001-01-01 (Go's internal epoch) to 1970-01-01.
const UNIX_TO_INTERNAL: i64 = 62_135_596_800;
/// More type definitions than any upstream file holds (1.5.1 writes about 30): a stream of
/// definitions alone is refused long before it matters.
const MAX_TYPES: usize = 4096;

/// One group of the upstream file.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamGroup {
    /// The grouping labels, as upstream keeps them (`job` included).
    pub labels: Vec<(String, String)>,
    pub families: Vec<UpstreamFamily>,
}

/// One family of a group: its name (the map key), when it was last pushed and its protobuf
/// `MetricFamily` bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamFamily {
    pub name: String,
    /// Unix seconds; None when the file holds Go's zero time (gob omits it).
    pub pushed_at: Option<f64>,
    pub proto: Vec<u8>,
}

/// Why bytes are not an upstream persistence file; `at` is the byte offset where it was seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (at byte {at})")]
pub struct GobError {
    pub at: usize,
    pub what: String,
}

/// True when `bytes` begin like a gob stream whose first message defines a type (a length,
/// then a negative type id): the way every upstream file begins, truncated or not. Used to tell
/// an upstream file from other foreign files, which get their own message.
pub fn looks_like_gob(bytes: &[u8]) -> bool {
    let mut r = Reader { b: bytes, at: 0 };
    let Ok(len) = r.uint() else { return false };
    len > 0 && r.int().is_ok_and(|id| id < 0)
}

/// Decodes an upstream persistence file into its groups, in file order.
pub fn decode_upstream_file(bytes: &[u8]) -> Result<Vec<UpstreamGroup>, GobError> {
    let mut r = Reader { b: bytes, at: 0 };
    let mut types: HashMap<i64, WireType> = HashMap::new();
    loop {
        if r.left() == 0 {
            return Err(r.err("the file ends before its value (no groups were written)"));
        }
        let len = r.len_prefix("message length")?;
        let mut msg = r.sub(len)?;
        let id = msg.int()?;
        if id < 0 {
            if types.len() >= MAX_TYPES {
                return Err(msg.err("too many type definitions"));
            }
            let def = msg.wire_type()?;
            msg.end("type definition")?;
            types.insert(-id, def);
            continue;
        }
        let shape = Shape::resolve(&types, id).map_err(|what| GobError { at: msg.at, what })?;
        // A value that is not a struct is sent as a struct's only field: delta 0.
        if msg.uint()? != 0 {
            return Err(msg.err("top-level value does not start with the singleton marker"));
        }
        let groups = shape.groups(&mut msg)?;
        msg.end("value")?;
        if r.left() != 0 {
            return Err(r.err("bytes after the value (upstream writes one value per file)"));
        }
        return Ok(groups);
    }
}

/// A type definition, as much of it as the upstream shape needs.
#[derive(Debug, Clone)]
enum WireType {
    Map { key: i64, elem: i64 },
    Struct { fields: Vec<(String, i64)> },
    GobEncoder,
    /// Arrays, slices, binary and text marshalers: legal gob, never in upstream's value.
    Other(&'static str),
}

/// Where the upstream value's fields sit in this stream's struct definitions.
struct Shape {
    /// Field numbers of `MetricGroup.Labels` and `.Metrics`.
    group: FieldRoles,
    /// Field numbers of `TimestampedMetricFamily.Timestamp` and `.GobbableMetricFamily`.
    family: FieldRoles,
}

/// The positions of a two-field struct's fields, by role.
#[derive(Clone, Copy)]
struct FieldRoles {
    first: u64,
    second: u64,
}

impl Shape {
    fn resolve(types: &HashMap<i64, WireType>, top: i64) -> Result<Shape, String> {
        let get = |id: i64, what: &str| {
            types
                .get(&id)
                .ok_or_else(|| format!("{what} has type id {id}, which the file does not define"))
        };
        let map_of = |id: i64, what: &str| match get(id, what)? {
            WireType::Map { key, elem } if *key == STRING_ID => Ok(*elem),
            WireType::Map { key, .. } => Err(format!(
                "{what} is a map keyed by type {key}, not by string (files of upstream before 1.0 are not read)"
            )),
            other => Err(format!("{what} is {}, not a map", other.kind())),
        };
        let roles = |id: i64, what: &str, names: [&str; 2]| match get(id, what)? {
            WireType::Struct { fields } => {
                if fields.len() != 2 {
                    return Err(format!("{what} has {} fields, not 2", fields.len()));
                }
                // A field's number in a value is its position in the definition.
                let find = |name: &str| {
                    fields
                        .iter()
                        .enumerate()
                        .find(|(_, (n, _))| n == name)
                        .map(|(at, (_, id))| (at as u64, *id))
                        .ok_or_else(|| format!("{what} has no field {name}"))
                };
                let ((first, first_id), (second, second_id)) = (find(names[0])?, find(names[1])?);
                Ok((FieldRoles { first, second }, [first_id, second_id]))
            }
            other => Err(format!("{what} is {}, not a struct", other.kind())),
        };
        if top < FIRST_USER_ID {
            return Err(format!(
                "the value has gob's built-in type {top}, not upstream's map of groups"
            ));
        }
        let group_id = map_of(top, "the file's value")?;
        let (group, [labels_id, metrics_id]) =
            roles(group_id, "a metric group", ["Labels", "Metrics"])?;
        if map_of(labels_id, "a group's Labels")? != STRING_ID {
            return Err("a group's Labels map does not hold strings".into());
        }
        let family_id = map_of(metrics_id, "a group's Metrics")?;
        let (family, [time_id, mf_id]) = roles(
            family_id,
            "a timestamped metric family",
            ["Timestamp", "GobbableMetricFamily"],
        )?;
        for (id, what) in [(time_id, "a Timestamp"), (mf_id, "a GobbableMetricFamily")] {
            match get(id, what)? {
                WireType::GobEncoder => {}
                other => return Err(format!("{what} is {}, not self-encoded", other.kind())),
            }
        }
        Ok(Shape { group, family })
    }

    fn groups(&self, r: &mut Reader<'_>) -> Result<Vec<UpstreamGroup>, GobError> {
        // A group takes at least its key and its end marker: two bytes.
        let count = r.count("groups", 2)?;
        let mut groups = Vec::with_capacity(count);
        for _ in 0..count {
            // Upstream's own key string (labels joined by 0xff bytes, so not UTF-8): the
            // labels below say the same.
            r.bytes()?;
            let mut labels = Vec::new();
            let mut families = Vec::new();
            r.fields(self.group, |r, first| {
                if first {
                    let n = r.count("grouping labels", 2)?;
                    for _ in 0..n {
                        labels.push((r.string()?, r.string()?));
                    }
                } else {
                    let n = r.count("metric families", 2)?;
                    for _ in 0..n {
                        families.push(self.family(r)?);
                    }
                }
                Ok(())
            })?;
            labels.sort();
            groups.push(UpstreamGroup { labels, families });
        }
        Ok(groups)
    }

    fn family(&self, r: &mut Reader<'_>) -> Result<UpstreamFamily, GobError> {
        let name = r.string()?;
        let mut pushed_at = None;
        let mut proto = None;
        r.fields(self.family, |r, first| {
            let at = r.at;
            let bytes = r.bytes()?;
            if first {
                pushed_at = Some(go_time(bytes).map_err(|what| GobError { at, what })?);
            } else {
                proto = Some(bytes.to_vec());
            }
            Ok(())
        })?;
        let proto = proto.ok_or_else(|| r.err(&format!("family {name:?} has no metric family")))?;
        Ok(UpstreamFamily {
            name,
            pushed_at: pushed_at.flatten(),
            proto,
        })
    }
}

impl WireType {
    fn kind(&self) -> &'static str {
        match self {
            WireType::Map { .. } => "a map",
            WireType::Struct { .. } => "a struct",
            WireType::GobEncoder => "self-encoded",
            WireType::Other(kind) => kind,
        }
    }
}

/// `time.Time.MarshalBinary`'s form (version 1: 15 bytes; version 2 adds a seconds offset) to
/// Unix seconds; None for Go's zero time.
fn go_time(b: &[u8]) -> Result<Option<f64>, String> {
    let expected = match b.first() {
        Some(1) => 15,
        Some(2) => 16,
        _ => return Err("a timestamp of an unknown encoding version".into()),
    };
    if b.len() != expected {
        return Err(format!("a timestamp of {} bytes, not {expected}", b.len()));
    }
    let word = |from: usize, n: usize| {
        b.iter()
            .skip(from)
            .take(n)
            .fold(0u64, |acc, &x| acc << 8 | u64::from(x))
    };
    let sec = word(1, 8) as i64;
    let nsec = word(9, 4);
    if nsec >= 1_000_000_000 {
        return Err("a timestamp with more than a second of nanoseconds".into());
    }
    if sec == 0 && nsec == 0 {
        return Ok(None);
    }
    Ok(Some(sec.wrapping_sub(UNIX_TO_INTERNAL) as f64 + nsec as f64 / 1e9))
}

/// A cursor over gob bytes: every read is checked against what is left.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len().saturating_sub(self.at)
    }

    fn err(&self, what: &str) -> GobError {
        GobError {
            at: self.at,
            what: what.to_owned(),
        }
    }

    fn truncated(&self) -> GobError {
        self.err("the file ends in the middle of a value (truncated?)")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GobError> {
        let end = self.at.checked_add(n).ok_or_else(|| self.truncated())?;
        let s = self.b.get(self.at..end).ok_or_else(|| self.truncated())?;
        self.at = end;
        Ok(s)
    }

    /// A reader over the next `n` bytes (one message), offsets kept.
    fn sub(&mut self, n: usize) -> Result<Reader<'a>, GobError> {
        let start = self.at;
        self.take(n)?;
        let b = self.b.get(..self.at).ok_or_else(|| self.truncated())?;
        Ok(Reader { b, at: start })
    }

    fn end(&self, what: &str) -> Result<(), GobError> {
        if self.left() == 0 {
            Ok(())
        } else {
            Err(self.err(&format!("{} unread bytes at the end of a {what}", self.left())))
        }
    }

    /// Gob's unsigned integer: one byte below 128, else the negated byte count then the bytes,
    /// big-endian.
    fn uint(&mut self) -> Result<u64, GobError> {
        let first = *self.take(1)?.first().ok_or_else(|| self.truncated())?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let n = usize::from(first.wrapping_neg());
        if n > 8 {
            return Err(self.err("an integer longer than 8 bytes"));
        }
        Ok(self.take(n)?.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x)))
    }

    /// Gob's signed integer: the sign in the lowest bit of the unsigned form.
    fn int(&mut self) -> Result<i64, GobError> {
        let u = self.uint()?;
        Ok(if u & 1 == 1 { !(u >> 1) as i64 } else { (u >> 1) as i64 })
    }

    fn len_prefix(&mut self, what: &str) -> Result<usize, GobError> {
        let at = self.at;
        let n = self.uint()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.left() => Ok(n),
            _ => Err(GobError {
                at,
                what: format!(
                    "a {what} of {n} bytes, more than the {} left (truncated?)",
                    self.left()
                ),
            }),
        }
    }

    /// An element count, each element taking at least `min_bytes`: a count the bytes left
    /// cannot hold is refused before anything is allocated for it.
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, GobError> {
        let at = self.at;
        let n = self.uint()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_bytes) <= self.left() => Ok(n),
            _ => Err(GobError {
                at,
                what: format!("{n} {what} announced, more than the bytes left can hold"),
            }),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], GobError> {
        let n = self.len_prefix("byte string")?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, GobError> {
        let at = self.at;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| GobError {
            at,
            what: "a string that is not valid UTF-8".into(),
        })
    }

    /// A struct of two fields (gob sends each present field as its number's delta from the
    /// previous one, and 0 at the end); `read(first)` reads the field in role `first` or second.
    fn fields(
        &mut self,
        roles: FieldRoles,
        mut read: impl FnMut(&mut Self, bool) -> Result<(), GobError>,
    ) -> Result<(), GobError> {
        let mut field: i64 = -1;
        let mut seen = [false; 2];
        while let Some(at) = self.next_field(&mut field)? {
            let role = match u64::try_from(field) {
                Ok(f) if f == roles.first => 0,
                Ok(f) if f == roles.second => 1,
                _ => {
                    return Err(GobError {
                        at,
                        what: format!("a struct field number {field} the type does not have"),
                    })
                }
            };
            if std::mem::replace(&mut seen[role], true) {
                return Err(GobError {
                    at,
                    what: "a struct field sent twice".into(),
                });
            }
            read(self, role == 0)?;
        }
        Ok(())
    }

    /// Moves `field` to the next field a struct sends (gob sends each present field as its
    /// number's delta from the previous one, and 0 at the end) and returns where it starts, or
    /// `None` at the end of the struct.
    fn next_field(&mut self, field: &mut i64) -> Result<Option<usize>, GobError> {
        let at = self.at;
        let delta = self.uint()?;
        if delta == 0 {
            return Ok(None);
        }
        *field = field.saturating_add(i64::try_from(delta).unwrap_or(i64::MAX));
        Ok(Some(at))
    }

    /// Reads a struct of gob's own types field by field: `read(self, field)` for each present
    /// field, in order.
    fn own_struct(
        &mut self,
        max_field: i64,
        mut read: impl FnMut(&mut Self, i64) -> Result<(), GobError>,
    ) -> Result<(), GobError> {
        let mut field: i64 = -1;
        while let Some(at) = self.next_field(&mut field)? {
            if field > max_field {
                return Err(GobError {
                    at,
                    what: format!("a type definition with an unknown field {field}"),
                });
            }
            read(self, field)?;
        }
        Ok(())
    }

    /// `CommonType{Name string; Id typeId}`: read and dropped (types are matched by shape).
    fn common_type(&mut self) -> Result<(), GobError> {
        self.own_struct(1, |r, f| match f {
            0 => r.bytes().map(|_| ()),
            _ => r.int().map(|_| ()),
        })
    }

    /// A type definition that is a `CommonType` followed by type ids and integers (fields
    /// 1..=`max_field`), none of which the upstream shape needs.
    fn skip_type(&mut self, max_field: i64) -> Result<(), GobError> {
        self.own_struct(max_field, |r, f| match f {
            0 => r.common_type(),
            _ => r.int().map(|_| ()),
        })
    }

    /// One `wireType` (`encoding/gob/type.go`): a struct of pointers, exactly one of them set.
    fn wire_type(&mut self) -> Result<WireType, GobError> {
        let mut found = None;
        let at = self.at;
        self.own_struct(6, |r, f| {
            let t = match f {
                0 => {
                    // arrayType{CommonType; Elem typeId; Len int}
                    r.skip_type(2)?;
                    WireType::Other("an array")
                }
                1 => {
                    // sliceType{CommonType; Elem typeId}
                    r.skip_type(1)?;
                    WireType::Other("a slice")
                }
                2 => {
                    // structType{CommonType; Field []fieldType{Name string; Id typeId}}
                    let mut fields = Vec::new();
                    r.own_struct(1, |r, f| {
                        if f == 0 {
                            return r.common_type();
                        }
                        let n = r.count("struct fields", 1)?;
                        for _ in 0..n {
                            let mut name = String::new();
                            let mut id = 0;
                            r.own_struct(1, |r, f| {
                                if f == 0 {
                                    name = r.string()?;
                                } else {
                                    id = r.int()?;
                                }
                                Ok(())
                            })?;
                            fields.push((name, id));
                        }
                        Ok(())
                    })?;
                    WireType::Struct { fields }
                }
                3 => {
                    // mapType{CommonType; Key typeId; Elem typeId}
                    let (mut key, mut elem) = (0, 0);
                    r.own_struct(2, |r, f| {
                        match f {
                            0 => r.common_type()?,
                            1 => key = r.int()?,
                            _ => elem = r.int()?,
                        }
                        Ok(())
                    })?;
                    WireType::Map { key, elem }
                }
                // gobEncoderType{CommonType}, for all three kinds of self-encoding types.
                4 => {
                    r.skip_type(0)?;
                    WireType::GobEncoder
                }
                5 => {
                    r.skip_type(0)?;
                    WireType::Other("a binary marshaler")
                }
                _ => {
                    r.skip_type(0)?;
                    WireType::Other("a text marshaler")
                }
            };
            if found.replace(t).is_some() {
                return Err(r.err("a type definition of two kinds at once"));
            }
            Ok(())
        })?;
        found.ok_or(GobError {
            at,
            what: "an empty type definition".into(),
        })
    }
}

#[cfg(test)]
#[path = "gob_tests.rs"]
mod tests;
