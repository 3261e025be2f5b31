//! Tests of the family encoding: layout, builder, wire form and sort keys.

use bytes::Bytes;

use super::encode::{reborrow_empty, sort_key};
use super::layout::FamilyHead;
use super::*;
use crate::exposition::{proto, Metric, MetricType};

#[test]
fn a_reborrowed_pair_buffer_keeps_its_allocation() {
    let text = String::from("name value");
    let mut v: Vec<(&str, &str)> = Vec::with_capacity(8);
    v.push((&text[..4], &text[5..]));
    let (at, cap) = (v.as_ptr() as usize, v.capacity());
    let kept: Vec<(&'static str, &'static str)> = reborrow_empty(v);
    assert!(kept.is_empty());
    assert_eq!((kept.as_ptr() as usize, kept.capacity()), (at, cap));
}

fn metric(labels: &[(&str, &str)]) -> Metric {
    Metric {
        label: labels
            .iter()
            .map(|(n, v)| proto::LabelPair {
                name: Some(n.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        gauge: Some(proto::Gauge { value: Some(1.0) }),
        ..Default::default()
    }
}

#[test]
fn sort_key_orders_like_upstream() {
    // fewer labels first
    assert!(sort_key(&metric(&[("a", "z")])) < sort_key(&metric(&[("a", "a"), ("b", "a")])));
    // then values position by position, a prefix first
    assert!(sort_key(&metric(&[("a", "a")])) < sort_key(&metric(&[("a", "ab")])));
    assert!(
        sort_key(&metric(&[("a", "a"), ("b", "z")]))
            < sort_key(&metric(&[("a", "ab"), ("b", "a")]))
    );
    // control bytes keep their order
    assert!(sort_key(&metric(&[("a", "a\u{0}")])) < sort_key(&metric(&[("a", "a\u{1}")])));
    assert!(sort_key(&metric(&[("a", "a\u{1}")])) < sort_key(&metric(&[("a", "a\u{2}")])));
    assert!(sort_key(&metric(&[("a", "a")])) < sort_key(&metric(&[("a", "a\u{0}")])));
}

#[test]
fn patched_gauge_equals_a_fresh_encoding() {
    let labels = [
        ("instance".to_string(), String::new()),
        ("job".to_string(), "j\"x".to_string()),
    ];
    let base = StoredFamily::gauge("push_time_seconds".into(), "h".into(), &labels, 0.0);
    for v in [
        1.7956715203070993e9,
        -0.5,
        f64::NAN,
        f64::INFINITY,
        123456.0,
        0.0,
    ] {
        let patched = base.with_gauge_value(v).unwrap();
        let fresh = StoredFamily::gauge("push_time_seconds".into(), "h".into(), &labels, v);
        assert_eq!(patched.text(), fresh.text(), "{v}");
        assert_eq!(patched.proto_metrics(), fresh.proto_metrics(), "{v}");
        assert!(patched.same_series(&fresh));
        if !v.is_nan() {
            assert_eq!(patched.to_metric_family(), fresh.to_metric_family());
        }
    }
    let counter = StoredFamily::encode("c".into(), "".into(), MetricType::Counter, vec![]);
    assert!(counter.with_gauge_value(1.0).is_none());
}

/// The families of `body` encoded into one block, with `grouping` merged in.
fn block_of(body: &str, grouping: &[(&str, &str)]) -> Vec<StoredFamily> {
    let fams =
        crate::exposition::parse_text(body.as_bytes(), crate::exposition::NameScheme::Legacy)
            .unwrap();
    let mut block = BlockBuilder::default();
    for mf in fams {
        let typ = mf.r#type();
        StoredFamily::encode_grouped_into(
            &mut block,
            intern(mf.name()),
            intern(mf.help()),
            typ,
            &mf.metric,
            grouping,
        );
    }
    block.finish()
}

#[test]
fn key_range_is_the_first_and_last_chunk_key() {
    let body = "a 1\nb{x=\"2\"} 2\nb{x=\"1\"} 3\nb{x=\"1\",y=\"0\"} 4\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    for f in block_of(body, &[("job", "j")]) {
        let keys: Vec<&[u8]> = f.chunks().map(|c| c.sort_key).collect();
        assert!(!keys.is_empty());
        assert_eq!(f.key_range(), (keys[0], keys[keys.len() - 1]), "{}", f.name);
    }
    let empty = StoredFamily::encode(intern("e"), intern(""), MetricType::Gauge, vec![]);
    assert_eq!(empty.key_range(), (&[][..], &[][..]));
}

#[test]
fn prefetch_points_at_the_heads() {
    // `prefetch` computes where a head is without reading the block; check the layout it
    // assumes (a wrong guess would be harmless, only slower).
    let handles = block_of("a 1\nb 2\nc{x=\"y\"} 3\n", &[]);
    assert_eq!(handles.len(), 3);
    for (i, f) in handles.iter().enumerate() {
        let head = std::ptr::from_ref::<FamilyHead>(f) as usize;
        let base = f.block.ptr() as usize;
        assert_eq!(head - base, f.head_offset(), "family {i}");
    }
}

/// A grouping key without labels: no grouping label is required of a family.
fn no_key() -> crate::store::GroupKey {
    crate::store::GroupKey::new(std::iter::empty::<(String, String)>())
}

fn job_j() -> crate::store::GroupKey {
    crate::store::GroupKey::new([("job".to_string(), "j".to_string())])
}

/// A gauge family of two metrics pushed out of exposition order.
fn two_gauges() -> StoredFamily {
    StoredFamily::encode(
        "g".into(),
        "help".into(),
        MetricType::Gauge,
        vec![metric(&[("job", "b")]), metric(&[("job", "a")])],
    )
}

#[test]
fn wire_form_round_trips_and_refuses_damage() {
    let fam = two_gauges();
    let mut w = Vec::new();
    fam.to_wire(&mut w);
    assert_eq!(w.len(), fam.wire_len());
    let back = StoredFamily::from_wire(&w, &no_key(), Default::default()).unwrap();
    assert_eq!(back.text(), fam.text());
    assert_eq!(back.proto_metrics(), fam.proto_metrics());
    assert!(back.same_series(&fam));
    assert_eq!(back.chunks().count(), 2);
    for cut in 0..w.len() {
        assert!(
            StoredFamily::from_wire(&w[..cut], &no_key(), Default::default()).is_err(),
            "cut at {cut}"
        );
    }
    for i in 0..w.len() {
        let mut bad = w.clone();
        bad[i] ^= 0xA5;
        // Must never panic; most flips are refused.
        let _ = StoredFamily::from_wire(&bad, &no_key(), Default::default());
    }
}

/// Everything a render or the API reads of a family.
fn view(f: &StoredFamily) -> (String, String, MetricType, Vec<u8>, Vec<u8>, Vec<u128>) {
    let keys = f.chunks().flat_map(|c| c.sort_key.to_vec()).collect();
    (
        f.name.to_string(),
        f.help.to_string(),
        f.typ,
        f.text().to_vec(),
        [keys, f.proto_metrics().to_vec()].concat(),
        f.series().collect(),
    )
}

#[test]
fn families_read_in_place_equal_copied_ones_and_share_the_buffer() {
    let fams = block_of(
        "# HELP a_total first\n# TYPE a_total counter\na_total{x=\"2\"} 1\na_total{x=\"1\"} 2\n\
         # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
        &[("job", "j")],
    );
    for text_only in [false, true] {
        // Families after some unrelated bytes, as in a message.
        let mut buf = b"prefix".to_vec();
        let mut places = Vec::new();
        for f in &fams {
            let at = buf.len();
            if text_only {
                f.to_wire_text_only(&mut buf);
            } else {
                f.to_wire(&mut buf);
            }
            places.push((at, buf.len() - at));
        }
        let bytes = Bytes::from(buf);
        let mut shared = SharedBlock::new(bytes.clone());
        for &(at, len) in &places {
            shared
                .add_wire(at, len, &job_j(), Default::default())
                .unwrap();
        }
        let in_place = shared.finish();
        assert_eq!(in_place.len(), fams.len());
        let range = bytes.as_ptr_range();
        for (i, (f, &(at, len))) in in_place.iter().zip(&places).enumerate() {
            // A stored copy needs the protobuf part: the text-only form is read in place only.
            let whole = if text_only {
                let mut w = Vec::new();
                fams[i].to_wire(&mut w);
                w
            } else {
                bytes[at..at + len].to_vec()
            };
            let copied = StoredFamily::from_wire(&whole, &job_j(), Default::default()).unwrap();
            let mut copied_view = view(&copied);
            if text_only {
                // No protobuf part in place: only the keys compare.
                copied_view
                    .4
                    .truncate(copied_view.4.len() - copied.proto_metrics().len());
            }
            assert_eq!(view(f), copied_view, "family {i}, text only: {text_only}");
            assert!(f.same_series(&copied));
            assert_eq!(f.key_range(), copied.key_range());
            if !text_only {
                assert_eq!(f.heap_bytes(), copied.heap_bytes());
                assert_eq!(view(f), view(&fams[i]));
                assert_eq!(f.to_metric_family(), fams[i].to_metric_family());
            }
            // Not copied: the text is read where it lies in the message.
            assert!(range.contains(&f.text().as_ptr()), "family {i}");
            assert!(!range.contains(&copied.text().as_ptr()));
        }
        assert!(StoredFamily::same_block(&in_place[0], &in_place[1]));
    }
}

#[test]
fn families_read_in_place_refuse_damage_and_places_outside_the_buffer() {
    let fam = two_gauges();
    let mut w = Vec::new();
    fam.to_wire(&mut w);
    let bytes = Bytes::from(w.clone());
    let one = |at: usize, len: usize| {
        let mut b = SharedBlock::new(bytes.clone());
        let res = b.add_wire(at, len, &no_key(), Default::default());
        (res, b.finish().len())
    };
    assert_eq!(one(0, w.len()).1, 1);
    for (at, len) in [
        (0, w.len() + 1),
        (1, w.len()),
        (usize::MAX, 2),
        (3, usize::MAX),
    ] {
        let (res, n) = one(at, len);
        assert!(res.is_err() && n == 0, "{at}+{len}");
    }
    for cut in 0..w.len() {
        let (res, n) = one(0, cut);
        assert!(res.is_err() && n == 0, "cut at {cut}");
    }
    for i in 0..w.len() {
        let mut bad = w.clone();
        bad[i] ^= 0xA5;
        let mut b = SharedBlock::new(Bytes::from(bad.clone()));
        // Never a panic, and the same verdict as the copying read.
        let res = b.add_wire(0, bad.len(), &no_key(), Default::default());
        let copied = StoredFamily::from_wire(&bad, &no_key(), Default::default());
        assert_eq!(res.is_ok(), copied.is_ok(), "flip at {i}");
        if let Ok(copied) = copied {
            assert_eq!(view(&b.finish()[0]), view(&copied));
        }
    }
}

#[test]
fn text_only_wire_form_keeps_text_order_and_identity() {
    let fam = two_gauges();
    let mut w = Vec::new();
    fam.to_wire_text_only(&mut w);
    assert_eq!(w.len(), fam.wire_len_text_only());
    assert!(w.len() < fam.wire_len());
    // Not a form a node stores: the stored decoding refuses it, a copy read in place for a
    // merged scrape takes it.
    assert!(StoredFamily::from_wire(&w, &no_key(), Default::default()).is_err());
    let mut block = SharedBlock::new(Bytes::from(w.clone()));
    block
        .add_wire(0, w.len(), &no_key(), Default::default())
        .unwrap();
    let back = block.finish().remove(0);
    assert_eq!(back.text(), fam.text());
    assert!(back.proto_metrics().is_empty());
    assert!(back.same_series(&fam));
    let keys = |f: &StoredFamily| f.chunks().map(|c| c.sort_key.to_vec()).collect::<Vec<_>>();
    assert_eq!(keys(&back), keys(&fam));
    assert!(back.chunks().all(|c| c.proto.is_empty()));
}

#[test]
fn encode_round_trips_through_the_model() {
    let fam = StoredFamily::encode(
        "g".into(),
        "help".into(),
        MetricType::Gauge,
        vec![metric(&[("job", "b")]), metric(&[("job", "a")])],
    );
    assert_eq!(fam.len(), 2);
    let mf = fam.to_metric_family();
    assert_eq!(mf.name(), "g");
    assert_eq!(mf.help(), "help");
    // The model keeps push order (what /api/v1/metrics shows); exposition is sorted.
    assert_eq!(mf.metric[0].label[0].value(), "b");
    let text: Vec<u8> = fam.chunks().flat_map(|c| c.text.to_vec()).collect();
    assert_eq!(
        String::from_utf8(text).unwrap(),
        "g{job=\"a\"} 1\ng{job=\"b\"} 1\n"
    );
    let keys: Vec<_> = fam.chunks().map(|c| c.sort_key.to_vec()).collect();
    assert!(keys[0] < keys[1]);
    let series: Vec<u128> = fam.series().collect();
    assert_ne!(series[0], series[1]);
}
