//! Protobuf delimited streams of `MetricFamily` (varint length prefix, then the message).

use std::collections::HashMap;

use prost::Message;

use super::MetricFamily;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DelimitedError {
    #[error("{0}")]
    Invalid(String),
    /// The stream has more than this many series ([`decode_delimited_bounded`]).
    #[error("more than {0} series")]
    TooManySeries(usize),
}

#[cfg(any(test, feature = "testsuite"))]
/// Decodes a whole delimited stream. A family name seen twice keeps the position of its first
/// occurrence and the content of its last, as upstream stores families in a map by name.
pub fn decode_delimited(input: &[u8]) -> Result<Vec<MetricFamily>, DelimitedError> {
    decode_delimited_bounded(input, usize::MAX)
}

/// [`decode_delimited`] that refuses a stream with more than `max_series` series (counted as the
/// store counts them: a summary's quantiles and 2, a histogram's buckets and 3, any other
/// metric 1), each message counted from its wire bytes before it is decoded: a huge message
/// is refused without building its metrics.
pub fn decode_delimited_bounded(
    input: &[u8],
    max_series: usize,
) -> Result<Vec<MetricFamily>, DelimitedError> {
    let mut series_of: Vec<usize> = Vec::new();
    let mut series = 0usize;
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut by_name: HashMap<String, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut rest = input;
    let mut index = 0usize;
    while !rest.is_empty() {
        let offset = input.len() - rest.len();
        let len = prost::encoding::decode_varint(&mut rest).map_err(|_| {
            DelimitedError::Invalid(format!(
                "invalid length prefix of message {index} at byte {offset}"
            ))
        })?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| {
                DelimitedError::Invalid(format!(
                    "message {index} at byte {offset} is {len} bytes long but only {} remain",
                    rest.len()
                ))
            })?;
        let (msg, tail) = rest.split_at(len);
        rest = tail;
        // Malformed wire data is left to the decoder, which names the error.
        let scanned = scan_family(msg);
        if let Some((name, n)) = scanned {
            // A family named again replaces the earlier copy's series.
            let replaced = by_name.get(name).map_or(0, |&i| series_of[i]);
            if (series - replaced).saturating_add(n) > max_series {
                return Err(DelimitedError::TooManySeries(max_series));
            }
        }
        let counted = scanned.map(|(_, n)| n);
        let mf = MetricFamily::decode(msg).map_err(|e| {
            DelimitedError::Invalid(format!(
                "invalid metric family in message {index} at byte {offset}: {e}"
            ))
        })?;
        let n = counted.unwrap_or_else(|| mf.metric.iter().map(metric_series).sum());
        // A family named again replaces the earlier one, and so do its series.
        match by_name.get(mf.name()) {
            Some(&i) => {
                series -= series_of[i];
                series_of[i] = n;
                families[i] = mf;
            }
            None => {
                by_name.insert(mf.name().to_owned(), families.len());
                families.push(mf);
                series_of.push(n);
            }
        }
        series += n;
        if series > max_series {
            return Err(DelimitedError::TooManySeries(max_series));
        }
        index += 1;
    }
    Ok(families)
}

/// A decoded metric's series, as the store counts them.
fn metric_series(m: &super::Metric) -> usize {
    if let Some(h) = &m.histogram {
        h.bucket.len() + 3
    } else if let Some(s) = &m.summary {
        s.quantile.len() + 2
    } else {
        1
    }
}

/// Field numbers of `metrics.proto`: MetricFamily.name, MetricFamily.metric, Metric.summary, Metric.histogram,
/// Summary.quantile, Histogram.bucket.
const FAMILY_NAME: u64 = 1;
const FAMILY_METRIC: u64 = 4;
const METRIC_SUMMARY: u64 = 4;
const METRIC_HISTOGRAM: u64 = 7;
const SUMMARY_QUANTILE: u64 = 3;
const HISTOGRAM_BUCKET: u64 = 3;

/// The name and series of one encoded `MetricFamily`, read from its wire bytes without decoding
/// it; `None` when the bytes are not well-formed protobuf.
fn scan_family(msg: &[u8]) -> Option<(&str, usize)> {
    let mut total = 0usize;
    let mut name = "";
    for_each_field(msg, |field, value| {
        if field == FAMILY_NAME {
            name = std::str::from_utf8(value?).ok()?;
        } else if field == FAMILY_METRIC {
            total = total.saturating_add(count_metric_series(value?)?);
        }
        Some(())
    })?;
    Some((name, total))
}

fn count_metric_series(msg: &[u8]) -> Option<usize> {
    let (mut quantiles, mut buckets) = (None::<usize>, None::<usize>);
    for_each_field(msg, |field, value| {
        let (counter, child) = match field {
            METRIC_SUMMARY => (&mut quantiles, SUMMARY_QUANTILE),
            METRIC_HISTOGRAM => (&mut buckets, HISTOGRAM_BUCKET),
            _ => return Some(()),
        };
        // Repeated occurrences of a message field merge: their entries add up.
        let mut n = counter.unwrap_or(0);
        for_each_field(value?, |f, _| {
            if f == child {
                n += 1;
            }
            Some(())
        })?;
        *counter = Some(n);
        Some(())
    })?;
    Some(match (buckets, quantiles) {
        (Some(b), _) => b + 3,
        (None, Some(q)) => q + 2,
        (None, None) => 1,
    })
}

/// Calls `f` with each field number of `msg` and, for length-delimited fields, their bytes
/// (`None` for the other wire types); `None` on malformed bytes or when `f` says so.
fn for_each_field<'a>(
    mut msg: &'a [u8],
    mut f: impl FnMut(u64, Option<&'a [u8]>) -> Option<()>,
) -> Option<()> {
    while !msg.is_empty() {
        let key = prost::encoding::decode_varint(&mut msg).ok()?;
        let (field, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => {
                prost::encoding::decode_varint(&mut msg).ok()?;
                None
            }
            1 => {
                msg = msg.get(8..)?;
                None
            }
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut msg).ok()?).ok()?;
                let bytes = msg.get(..len)?;
                msg = &msg[len..];
                Some(bytes)
            }
            5 => {
                msg = msg.get(4..)?;
                None
            }
            _ => return None,
        };
        f(field, value)?;
    }
    Some(())
}

#[cfg(any(test, feature = "testsuite"))]
/// Appends one length-delimited message.
pub fn encode_delimited(out: &mut Vec<u8>, mf: &MetricFamily) {
    let len = mf.encoded_len();
    out.reserve(len + prost::length_delimiter_len(len));
    prost::encoding::encode_varint(len as u64, out);
    // Encoding into a Vec cannot run out of space.
    if mf.encode(out).is_err() {
        debug_assert!(false, "encoding into a Vec should never fail");
    }
}

#[cfg(test)]
#[path = "delimited_tests.rs"]
mod tests;
