//! The exposition check of a family from a peer: what a node stores or renders of another
//! node's message must be exactly what a client's push could have produced in that group, so
//! a peer cannot put anything into `/metrics` that a push could not (comment or TYPE lines,
//! other families, garbage, series without the group's labels).
//!
//! Each entry's text must be exactly the lines the encoder writes for one metric of this family
//! (`exposition::CanonicalLines`: the family's name and type, the labels the same on every
//! line, no comment or blank line, a timestamp only where allowed), with the label rules of a
//! push, the group's grouping labels, and no two metrics with the same labels; its protobuf
//! part must be as many metrics, each carrying the value of the family's type, each as prost
//! would decode it (walked, not decoded: `proto_check`). The lines are read in the one form
//! the store writes them, not parsed as any exposition: a family the store wrote always
//! passes, and a general parse would cost a node taking a peer's copy as much again as the
//! push it copies.

use std::collections::HashSet;

use super::proto_check::{walk_metrics, TIMESTAMP_FIELD};
use crate::exposition::{is_valid_label_name, CanonicalLines, Labels, MetricType, NameScheme};
use crate::store::key::PackedKey;
use crate::store::GroupKey;

/// What a peer's family must be: of the group `key`, with its protobuf part (`proto`: a family
/// that is stored; a merged scrape's text-only copy carries none), with timestamps only where
/// they are allowed (a forwarded push that carries them, which the primary refuses and records
/// as a failure like a single node; never in a group's state).
#[derive(Debug, Clone, Copy)]
pub struct Expect<'k> {
    pub key: Grouping<'k>,
    pub proto: bool,
    pub timestamps: bool,
    pub names: NameScheme,
}

/// The group's grouping labels as the check reads them: its key, or the key packed into one
/// allocation where many groups' keys are read in turn (a merged scrape's reader).
#[derive(Debug, Clone, Copy)]
pub enum Grouping<'k> {
    Key(&'k GroupKey),
    Packed(&'k PackedKey),
}

impl<'k> From<&'k GroupKey> for Grouping<'k> {
    fn from(k: &'k GroupKey) -> Self {
        Grouping::Key(k)
    }
}

impl<'k> From<&'k PackedKey> for Grouping<'k> {
    fn from(k: &'k PackedKey) -> Self {
        Grouping::Packed(k)
    }
}

impl<'k> Grouping<'k> {
    fn pairs(self) -> impl Iterator<Item = (&'k str, &'k str)> {
        let (key, packed) = match self {
            Grouping::Key(k) => (Some(k), None),
            Grouping::Packed(p) => (None, Some(p)),
        };
        key.into_iter()
            .flat_map(|k| k.labels().iter().map(|(n, v)| (n.as_str(), v.as_str())))
            .chain(packed.into_iter().flat_map(PackedKey::pairs))
    }
}

impl<'k> Expect<'k> {
    /// A family of a group's state (stored, no timestamps).
    pub fn stored(key: impl Into<Grouping<'k>>, names: NameScheme) -> Self {
        Expect {
            key: key.into(),
            proto: true,
            timestamps: false,
            names,
        }
    }
}

/// Every refusal of this check says so (the peer-refusal counter's `invalid_family` reason).
pub const NOT_VALID_EXPOSITION: &str = "not valid exposition";

fn refuse(name: &str, why: impl std::fmt::Display) -> String {
    format!("family {name:?} is {NOT_VALID_EXPOSITION}: {why}")
}

/// Checks one family from a peer for the group `key` (see the module doc). `text_ends` are
/// where each entry's lines end in `text` (one metric each); `proto` the concatenated protobuf
/// metrics, required when `expect.proto` (a family that is stored; a merged scrape's text-only
/// copy carries none).
pub(super) fn check(
    name: &str,
    typ: MetricType,
    text: &str,
    text_ends: impl ExactSizeIterator<Item = usize>,
    proto: &[u8],
    expect: &Expect<'_>,
) -> Result<(), String> {
    let count = text_ends.len();
    let lines = CanonicalLines::new(name, typ);
    let bound = match typ {
        MetricType::Summary => Some("quantile"),
        MetricType::Histogram | MetricType::GaugeHistogram => Some("le"),
        _ => None,
    };
    let mut labels = Labels::new();
    // Two metrics of one family with the same labels would render one series twice, which no
    // push can: their label bytes are equal exactly when their label sets are.
    let mut seen: HashSet<&[u8], foldhash::fast::FixedState> =
        HashSet::with_capacity_and_hasher(if count > 1 { count } else { 0 }, Default::default());
    let mut start = 0;
    for end in text_ends {
        let m = lines
            .read_metric(&text.as_bytes()[start..end], &mut labels)
            .map_err(|e| refuse(name, e))?;
        if m.timestamp && !expect.timestamps {
            return Err(refuse(name, "a metric has a timestamp"));
        }
        check_labels(name, &labels, bound, expect.key, expect.names)?;
        if count > 1 && !seen.insert(m.label_bytes) {
            return Err(refuse(name, "two metrics have the same labels"));
        }
        start = end;
    }
    if expect.proto || !proto.is_empty() {
        check_proto(name, typ, proto, count, expect.timestamps)?;
    }
    Ok(())
}

/// A push's label rules: names valid and not reserved, each once (the store writes them
/// sorted), not the label that places a summary's or histogram's sample (`bound`), and the
/// group's grouping labels with the group's values.
fn check_labels(
    name: &str,
    labels: &[(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)],
    bound: Option<&str>,
    key: Grouping<'_>,
    names: NameScheme,
) -> Result<(), String> {
    for (i, (ln, _)) in labels.iter().enumerate() {
        if !is_valid_label_name(ln, names) || ln.starts_with("__") || Some(&**ln) == bound {
            return Err(refuse(name, format_args!("invalid label name {ln:?}")));
        }
        if i > 0 && labels[i - 1].0 >= *ln {
            return Err(refuse(name, "labels not sorted by unique name"));
        }
    }
    for (kn, kv) in key.pairs() {
        let found = labels
            .binary_search_by(|(n, _)| n.as_ref().cmp(kn))
            .ok()
            .map(|i| labels[i].1.as_ref());
        let ok = match found {
            Some(v) => v == kv,
            None => kv.is_empty(),
        };
        if !ok {
            return Err(refuse(
                name,
                format_args!("a metric lacks the grouping label {kn}={kv:?}"),
            ));
        }
    }
    Ok(())
}

/// Each entry's protobuf range is exactly one whole metric of the protobuf part (tag and
/// length included), and no two entries share one: a render copies the ranges of the entries it
/// shows, so a range that cuts a metric would render an undecodable message, and ranges that
/// repeat one large metric would multiply what a render writes.
pub(super) fn check_proto_ranges(
    name: &str,
    proto: &[u8],
    ranges: impl ExactSizeIterator<Item = (usize, usize)>,
) -> Result<(), String> {
    const METRIC_TAG: u8 = 0x22; // field 4 (`metric`), length-delimited
    let mut starts = Vec::with_capacity(ranges.len());
    let mut rest = proto;
    while !rest.is_empty() {
        let at = proto.len() - rest.len();
        if rest[0] != METRIC_TAG {
            return Err(refuse(name, "its protobuf part holds more than metrics"));
        }
        let mut body = &rest[1..];
        let len = prost::encoding::decode_varint(&mut body)
            .ok()
            .and_then(|l| usize::try_from(l).ok())
            .filter(|&l| l <= body.len())
            .ok_or_else(|| refuse(name, "undecodable protobuf part: a metric is cut"))?;
        let whole = rest.len() - body.len() + len;
        starts.push((at, whole, false));
        rest = &rest[whole..];
    }
    for (ps, pl) in ranges {
        let i = starts.binary_search_by_key(&ps, |s| s.0);
        match i.map(|i| &mut starts[i]) {
            Ok(s) if s.1 == pl && !s.2 => s.2 = true,
            _ => {
                return Err(refuse(
                    name,
                    "an entry's protobuf range is not one metric of its own",
                ))
            }
        }
    }
    Ok(())
}

/// The protobuf part is `count` metrics of the family's type (each with the value field of
/// the type), without timestamps unless allowed, each as prost would decode it
/// (`proto_check`).
fn check_proto(
    name: &str,
    typ: MetricType,
    proto: &[u8],
    count: usize,
    timestamps: bool,
) -> Result<(), String> {
    let value_field = match typ {
        MetricType::Counter => 3,
        MetricType::Gauge => 2,
        MetricType::Summary => 4,
        MetricType::Untyped => 5,
        MetricType::Histogram | MetricType::GaugeHistogram => 7,
    };
    let mut n = 0usize;
    walk_metrics(proto, |fields| {
        n += 1;
        let stamped = fields & (1 << TIMESTAMP_FIELD) != 0;
        if fields & (1 << value_field) == 0 || (stamped && !timestamps) {
            return Err("its protobuf part is another family");
        }
        Ok(())
    })
    .map_err(|e| refuse(name, e))?;
    if n != count {
        return Err(refuse(name, "its protobuf part is another family"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::exposition::{MetricType, NameScheme};
    use crate::store::{GroupKey, StoredFamily};

    fn key() -> GroupKey {
        GroupKey::new([("job".to_string(), "j".to_string())])
    }

    use crate::testsupport::peer::{family_by_hand as wire, gauge_metric};

    /// The protobuf `Metric` (field 4 of a family) of a gauge with `job="j"`.
    fn gauge_proto() -> Vec<u8> {
        gauge_metric(&[("job", "j")])
    }

    /// The check of a family with one metric of `text`, against the group's key and against
    /// the key packed (a merged scrape's reader): both must answer the same.
    fn check(text: &str) -> Result<StoredFamily, String> {
        let p = gauge_proto();
        let w = wire("up", MetricType::Gauge, &[(text, &p)]);
        let stored = StoredFamily::from_wire(&w, &key(), NameScheme::Legacy);
        let packed = crate::store::key::PackedKey::of(&key());
        let mut shared = crate::store::family::SharedBlock::new(w.clone().into());
        let in_place = shared.add_wire(0, w.len(), &packed, NameScheme::Legacy);
        match (&stored, &in_place) {
            (Ok(_), Ok(())) => assert_eq!(shared.finish()[0].text(), text.as_bytes()),
            (Err(a), Err(b)) => assert_eq!(a, b, "{text:?}"),
            _ => panic!("{text:?}: key {stored:?}, packed {in_place:?}"),
        }
        stored
    }

    #[test]
    fn a_family_a_push_could_make_is_accepted() {
        let f = check("up{job=\"j\"} 1\n").unwrap();
        assert_eq!(f.text(), b"up{job=\"j\"} 1\n");
    }

    #[test]
    fn smuggled_and_foreign_lines_are_refused() {
        for (text, why) in [
            ("up{job=\"j\"} 1\n# TYPE up counter\n", "more lines"),
            ("up{job=\"j\"} 1\n# just a comment\n", "more lines"),
            ("up{job=\"j\"} 1\n\n", "more lines"),
            ("# HELP up x\nup{job=\"j\"} 1\n", "sample line"),
            ("up{job=\"j\"} 1\nup{job=\"prometheus\"} 0\n", "more lines"),
            ("up{job=\"j\"} 1\nother{job=\"j\"} 0\n", "more lines"),
            ("upx{job=\"j\"} 1\n", "sample line"),
            ("other{job=\"j\"} 1\n", "sample line"),
            ("up_sum{job=\"j\"} 1\n", "sample line"),
            ("up {job=\"j\"} 1\n", "invalid float"),
            ("up{job=\"j\"}  1\n", NOT),
            ("up{job=\"j\",} 1\n", NOT),
            ("up{\"job\"=\"j\"} 1\n", "legacy label name is quoted"),
            ("up{job=\"j\\q\"} 1\n", "invalid escape"),
            ("up{job=\"j\"} 1 12x\n", "timestamp"),
            ("up{job=\"j\"} garbage\n", NOT),
            ("up{job=\"j\" 1\n", NOT),
            ("up{job=\"prometheus\"} 1\n", "grouping label job"),
            ("up 1\n", "grouping label job"),
            ("up{job=\"j\",job=\"j\"} 1\n", "sorted by unique name"),
            ("up{zz=\"1\",job=\"j\"} 1\n", "sorted by unique name"),
            ("up{__name__=\"x\",job=\"j\"} 1\n", NOT),
            ("up{job=\"j\"} 1 1700000000000\n", "timestamp"),
        ] {
            let err = check(text).expect_err(text);
            assert!(err.contains(NOT), "{text:?}: {err}");
            assert!(err.contains(why), "{text:?}: {err} (wanted {why:?})");
        }
    }
    const NOT: &str = super::NOT_VALID_EXPOSITION;

    /// Every family the store's encoders write (text and protobuf pushes, every type, escaped
    /// values, quoted UTF-8 names, special values, timestamps where allowed) passes the check
    /// unchanged.
    #[test]
    fn every_family_the_store_writes_passes() {
        use crate::store::prepare::{prepare_push, prepare_text, Validation};
        let esc = r#"a="x\\y\n\"z""#;
        let body = format!(
            "# TYPE h histogram\nh_bucket{{le=\"0.5\"}} 1\nh_bucket{{le=\"+Inf\"}} 2\nh_sum 3\n\
             h_count 2\nh_bucket{{{esc},le=\"1\"}} 0\nh_sum{{{esc}}} 0\nh_count{{{esc}}} 0\n\
             # TYPE s summary\ns{{quantile=\"0.5\"}} NaN\ns_sum -Inf\ns_count 0\n\
             s_sum{{b=\"1\"}} 1\ns_count{{b=\"1\"}} 1\n# TYPE c counter\nc{{x=\"1\"}} 1e+30\n\
             c{{x=\"2\"}} -0.5\nu 1\n{{\"my.metric\",\"l\u{e1}bel\"=\"v\",z=\"\"}} 2\n"
        );
        let names = NameScheme::Utf8;
        let group = key();
        let v = Validation {
            names,
            ..Validation::default()
        };
        let parsed = crate::exposition::parse_text_borrowed(body.as_bytes(), names).unwrap();
        let from_text = prepare_text(key(), &parsed, true, &v, crate::store::prepare::NO_STORE).unwrap();
        let from_proto = prepare_push(key(), parsed.to_families(), true, &v).unwrap();
        let with_ts = crate::exposition::parse_text(b"t{x=\"1\"} 1 -17\n", names).unwrap();
        let timestamped = prepare_push(key(), with_ts, true, &v).unwrap();
        let expect = super::Expect {
            timestamps: true,
            ..super::Expect::stored(&group, names)
        };
        let all = from_text.families.iter().chain(&from_proto.families);
        for f in all.chain(&timestamped.families) {
            let mut w = Vec::new();
            f.to_wire(&mut w);
            let mut block = crate::store::family::BlockBuilder::default();
            StoredFamily::from_wire_into(&mut block, &w, &expect)
                .unwrap_or_else(|e| panic!("{:?}: {e}\n{}", f.name, String::from_utf8_lossy(f.text())));
            assert_eq!(block.finish_one().text(), f.text());
        }
        assert_eq!(from_text.families.len(), 5);
    }

    /// What the lines of a summary or histogram can smuggle: labels that differ between the
    /// lines of one metric, the bound label as an ordinary one, two metrics with the same labels,
    /// a metric cut short or with lines out of order.
    #[test]
    fn summary_and_histogram_lines_off_the_encoders_form_are_refused() {
        let p = gauge_proto();
        let refuse = |typ: MetricType, entries: &[&str], why: &str| {
            let e: Vec<(&str, &[u8])> = entries.iter().map(|t| (*t, &p[..])).collect();
            let err = StoredFamily::from_wire(&wire("s", typ, &e), &key(), NameScheme::Legacy)
                .expect_err(why);
            assert!(err.contains(NOT) && err.contains(why), "{entries:?}: {err} (wanted {why:?})");
        };
        let (s, h) = (MetricType::Summary, MetricType::Histogram);
        refuse(s, &["s{job=\"j\",quantile=\"0.5\"} 1\ns_sum{job=\"k\"} 1\ns_count{job=\"j\"} 1\n"], "different labels");
        refuse(s, &["s{job=\"j\",quantile=\"0.5\",quantile=\"0.9\"} 1\ns_sum{job=\"j\",quantile=\"0.5\"} 1\ns_count{job=\"j\",quantile=\"0.5\"} 1\n"], "invalid label name \"quantile\"");
        refuse(s, &["s_sum{job=\"j\"} 1\n"], "sample line");
        refuse(s, &["s_count{job=\"j\"} 1\ns_sum{job=\"j\"} 1\n"], "sample line");
        refuse(s, &["s{job=\"j\",quantile=\"x\"} 1\ns_sum{job=\"j\"} 1\ns_count{job=\"j\"} 1\n"], "invalid float");
        refuse(h, &["s_sum{job=\"j\"} 1\ns_count{job=\"j\"} 1\n"], "sample line");
        refuse(h, &["s_bucket{job=\"j\",le=\"1\"} 1\ns_bucket{job=\"j\",le=\"2\"} 1\ns_sum{job=\"j\"} 1\n"], "sample line");
        let one = "s_bucket{job=\"j\",le=\"+Inf\"} 1\ns_sum{job=\"j\"} 1\ns_count{job=\"j\"} 1\n";
        refuse(h, &[one, one], "two metrics have the same labels");
        refuse(MetricType::Gauge, &["s{job=\"j\"} 1\n", "s{job=\"j\"} 2\n"], "two metrics have the same labels");
    }

    #[test]
    fn a_protobuf_part_that_does_not_match_is_refused() {
        let text = "up{job=\"j\"} 1\n";
        let p = gauge_proto();
        for (proto, why) in [
            (&b"\x22\x03abc"[..], "undecodable"),
            (&b""[..], "another family"),
            (&[p.clone(), p.clone()].concat()[..], "another family"),
            // A field that renames the family inside its protobuf part.
            (
                &[p.clone(), b"\x0a\x01x".to_vec()].concat()[..],
                "more than metrics",
            ),
        ] {
            let w = wire("up", MetricType::Gauge, &[(text, proto)]);
            let err = StoredFamily::from_wire(&w, &key(), NameScheme::Legacy).unwrap_err();
            assert!(err.contains(why), "{err} (wanted {why:?})");
        }
        // Entry ranges that cut a metric or share one, while the whole part decodes.
        let (pa, pb) = (
            gauge_metric(&[("job", "j"), ("l", "a")]),
            gauge_metric(&[("job", "j"), ("l", "b")]),
        );
        let two = || {
            wire(
                "up",
                MetricType::Gauge,
                &[("up{job=\"j\",l=\"a\"} 1\n", &pa), ("up{job=\"j\",l=\"b\"} 1\n", &pb)],
            )
        };
        assert!(StoredFamily::from_wire(&two(), &key(), NameScheme::Legacy).is_ok());
        // The last entry's (proto_start, proto_len) sit 24 and 20 bytes before the end.
        let set = |w: &mut Vec<u8>, back: usize, v: u32| {
            let at = w.len() - back;
            w[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        let mut cut = two();
        set(&mut cut, 20, pb.len() as u32 - 1);
        let mut shared = two();
        set(&mut shared, 24, 0);
        for w in [cut, shared] {
            let err = StoredFamily::from_wire(&w, &key(), NameScheme::Legacy).unwrap_err();
            assert!(err.contains("not one metric of its own"), "{err}");
        }
        // The wrong value type: a counter family whose metric is a gauge.
        let w = wire("up", MetricType::Counter, &[(text, &p)]);
        assert!(StoredFamily::from_wire(&w, &key(), NameScheme::Legacy).is_err());
    }
}
