//! Between HTTP and the store: a push as the HTTP layer hands it over (URL parsed, body read
//! and decompressed by [`body`]), decoded and validated by whichever node applies it.

pub mod body;
pub mod inflight;

use self::body::BodyFormat;
use crate::exposition::{
    decode_delimited_bounded, parse_text_bounded, BoundedParseError, DelimitedError,
    MetricFamily, NameScheme, ParsedText,
};
use crate::store::aggregate::apply::Incoming;
use crate::store::{
    prepare_push_against, prepare_text, too_many_series, GroupKey, PreparedPush, PushError, Store,
    Validation,
};

/// A push as the HTTP layer hands it over: the URL parsed, the body read (and decompressed)
/// but not decoded. Whichever node applies it decodes it (`PushRequest::prepare_now`): a cluster
/// node that receives most of the load can leave that to the group's primary.
#[derive(Debug)]
pub struct PushRequest {
    pub key: GroupKey,
    pub body: bytes::Bytes,
    pub format: BodyFormat,
    /// PUT (true) replaces the whole group, POST only the families in the body.
    pub replace_all: bool,
    /// The group's TTL from this push on, in seconds (0: never expires).
    pub ttl: f64,
}

impl PushRequest {
    /// Whether decoding and applying the push is left to the blocking pool.
    pub fn is_large(&self) -> bool {
        self.body.len() > INLINE_BODY_LIMIT
    }

    /// Decodes the body and validates the push (names, limits, one push's own consistency).
    /// `Invalid` is the refusal a node records on the group (push_failure_time_seconds); every
    /// other error changes nothing. With `held`, a repeated series of a family whose type
    /// conflicts with the groups that store holds is refused for the conflict, as upstream does.
    pub fn prepare_now(self, v: &Validation, held: Option<&Store>) -> Result<PreparedPush, PushError> {
        let (key, replace_all) = (self.key.clone(), self.replace_all);
        let conflict = |name: &str, typ, labels: &str| {
            held.and_then(|s| s.repeat_conflict(&key, replace_all, name, typ, labels))
        };
        // Both decoders stop as soon as the body passes the series limit, so a huge body costs
        // the memory of the limit, not of everything it holds.
        let limit = v.limits.max_series_per_push;
        if let BodyFormat::Text = self.format {
            // Checked and encoded straight from the parser's borrowed model.
            let parsed = parse_body_text(&self.body, v.names, limit)?;
            return prepare_text(self.key, &parsed, self.replace_all, v, &conflict)
                .map(|p| p.with_ttl(self.ttl));
        }
        let families = decode_delimited(&self.body, limit)?;
        prepare_push_against(self.key, families, self.replace_all, v, &conflict)
            .map(|p| p.with_ttl(self.ttl))
    }

    /// Decodes the body for an aggregating group, which adds it into its state and then checks
    /// and encodes the state whole: a text body as the parser's borrowed model, a protobuf body
    /// as the data model, with the same limit and errors as [`Self::prepare_now`].
    pub fn decode<'b>(
        body: &'b [u8],
        format: BodyFormat,
        v: &Validation,
    ) -> Result<Decoded<'b>, PushError> {
        let limit = v.limits.max_series_per_push;
        match format {
            BodyFormat::Text => Ok(Decoded::Text(parse_body_text(body, v.names, limit)?)),
            _ => Ok(Decoded::Model(decode_delimited(body, limit)?)),
        }
    }
}

/// A push body decoded by [`PushRequest::decode`].
pub enum Decoded<'a> {
    Text(ParsedText<'a>),
    Model(Vec<MetricFamily>),
}

impl Decoded<'_> {
    /// The push as an aggregating group reads it.
    pub fn incoming(&self) -> Incoming<'_> {
        match self {
            Decoded::Text(t) => Incoming::Text(t),
            Decoded::Model(f) => Incoming::Model(f),
        }
    }
}

fn parse_body_text(body: &[u8], names: NameScheme, limit: usize) -> Result<ParsedText<'_>, PushError> {
    parse_text_bounded(body, names, limit).map_err(|e| match e {
        BoundedParseError::TooManySeries(n) => too_many_series(n),
        BoundedParseError::Syntax(e) => PushError::BadBody(e.to_string()),
    })
}

fn decode_delimited(body: &[u8], limit: usize) -> Result<Vec<MetricFamily>, PushError> {
    decode_delimited_bounded(body, limit).map_err(|e| match e {
        DelimitedError::TooManySeries(n) => too_many_series(n),
        e => PushError::BadBody(e.to_string()),
    })
}

/// Payloads above this size (prepared families, group states) are decoded on the blocking
/// pool, not a runtime thread.
pub const INLINE_PREPARE_LIMIT: usize = 256 * 1024;

/// Push bodies above this size (about 2,000 series of text) are decoded, prepared and applied
/// on the blocking pool.
pub const INLINE_BODY_LIMIT: usize = 64 * 1024;

/// Runs a push's work on the blocking pool when `large`, inline otherwise (a thread handoff
/// costs more than a small push's work).
pub async fn off_runtime<T: Send + 'static>(
    large: bool,
    work: impl FnOnce() -> Result<T, PushError> + Send + 'static,
) -> Result<T, PushError> {
    if large {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(PushError::Unavailable(format!("push worker failed: {e}"))))
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{encode_delimited, parse_text, NameScheme};
    use crate::store::Limits;

    /// 1 (gauge) + 2 + 2 (summary with two quantiles) + 3 + 2 (histogram with two buckets) = 10.
    const BODY: &str = "g{a=\"1\"} 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 2\ns_sum 3\ns_count 4\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n";

    fn request(body: Vec<u8>, format: BodyFormat) -> PushRequest {
        PushRequest {
            key: GroupKey::new([("job".to_owned(), "j".to_owned())]),
            body: body.into(),
            format,
            replace_all: true,
            ttl: 0.0,
        }
    }

    fn validation(max_series: usize) -> Validation {
        Validation {
            limits: Limits {
                max_series_per_push: max_series,
                ..Limits::default()
            },
            ..Validation::default()
        }
    }

    fn protobuf(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for f in parse_text(text.as_bytes(), NameScheme::Legacy).unwrap() {
            encode_delimited(&mut out, &f);
        }
        out
    }

    #[test]
    fn both_decoders_stop_at_the_series_limit_with_the_store_s_message() {
        for (format, body) in [
            (BodyFormat::Text, BODY.as_bytes().to_vec()),
            (BodyFormat::ProtobufDelimited, protobuf(BODY)),
        ] {
            assert!(request(body.clone(), format)
                .prepare_now(&validation(10), None)
                .is_ok());
            let err = request(body, format)
                .prepare_now(&validation(9), None)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "push has more than 9 series (--push.max-series-per-push)",
                "{format:?}"
            );
            assert!(matches!(err, PushError::LimitExceeded(_)));
        }
    }

    #[test]
    fn the_text_parser_stops_before_reading_past_the_limit() {
        // The garbage after the third series is never reached.
        let body = "a 1\nb 2\nc 3\nthis is { not a line\n";
        let err = request(body.into(), BodyFormat::Text)
            .prepare_now(&validation(2), None)
            .unwrap_err();
        assert!(matches!(err, PushError::LimitExceeded(_)), "{err}");
        let err = request(body.into(), BodyFormat::Text)
            .prepare_now(&validation(10), None)
            .unwrap_err();
        assert!(matches!(err, PushError::BadBody(_)), "{err}");
    }

    #[test]
    fn a_protobuf_family_named_twice_counts_only_its_last_copy() {
        let mut body = protobuf("x{a=\"1\"} 1\nx{a=\"2\"} 1\n");
        body.extend(protobuf("x 1\n"));
        assert!(request(body, BodyFormat::ProtobufDelimited)
            .prepare_now(&validation(2), None)
            .is_ok());
    }

    /// Upstream's registry skips a metric whose type is not its family's, and a family whose
    /// name collides, before it looks for repeats: a push repeating a series of such a family
    /// is refused for the conflict; a repeat without a conflict stays a repeat.
    #[test]
    fn a_repeated_series_of_a_conflicting_family_is_refused_for_the_conflict() {
        let store = Store::new(crate::store::StoreOptions::default());
        let other = PushRequest {
            key: GroupKey::new([("job".to_owned(), "other".to_owned())]),
            ..request(b"# TYPE m histogram\nm_bucket{le=\"+Inf\"} 1\nm_sum 1\nm_count 1\n".to_vec(), BodyFormat::Text)
        };
        let held = other.prepare_now(&validation(10), Some(&store)).unwrap();
        store.push(held, 1.0).unwrap();
        let repeated = "# TYPE m gauge\nm 1\nm 2\nn 1\nn 2\n";
        let conflict = "pushed metrics are invalid or inconsistent with existing metrics: \
                        collected metric \"m\" { instance=\"\",job=\"j\" } is not a HISTOGRAM";
        let repeat = |name: &str| {
            format!(
                "pushed metrics are invalid or inconsistent with existing metrics: collected \
                 metric \"{name}\" {{ instance=\"\",job=\"j\" }} was collected before with the same name and \
                 label values"
            )
        };
        for (format, body) in [
            (BodyFormat::Text, repeated.as_bytes().to_vec()),
            (BodyFormat::ProtobufDelimited, protobuf(repeated)),
        ] {
            let err = request(body.clone(), format)
                .prepare_now(&validation(10), Some(&store))
                .unwrap_err();
            assert!(matches!(err, PushError::Invalid(_)), "{err}");
            assert_eq!(err.to_string(), conflict, "{format:?}");
            // Without the store (or its check), the repeat.
            let err = request(body, format)
                .prepare_now(&validation(10), None)
                .unwrap_err();
            assert_eq!(err.to_string(), repeat("m"), "{format:?}");
        }
        let err = request(b"m_count 1\nm_count 2\n".to_vec(), BodyFormat::Text)
            .prepare_now(&validation(10), Some(&store))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pushed metrics are invalid or inconsistent with existing metrics: collected metric \
             named \"m_count\" collides with previously collected histogram named \"m\""
        );
        let err = request(b"n 1\nn 2\n".to_vec(), BodyFormat::Text)
            .prepare_now(&validation(10), Some(&store))
            .unwrap_err();
        assert_eq!(err.to_string(), repeat("n"));
    }
}
