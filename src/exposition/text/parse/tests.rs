//! The parser against expfmt's behaviour (messages and line numbers of errors, folding, UTF-8
//! names, round trips through the encoder), and property tests: no panics on any input, and the
//! shortcuts for repeats change nothing.

use std::borrow::Cow;

use proptest::prelude::*;

use crate::exposition::names::NameScheme;
use crate::exposition::proto::{MetricFamily, MetricType};
use crate::exposition::text::encode::families_to_text;

use super::parser::Parser;
use super::{parse_text, parse_text_borrowed, TextParseError};

fn parse(s: &str) -> Result<Vec<MetricFamily>, TextParseError> {
    parse_text(s.as_bytes(), NameScheme::Legacy)
}

fn err(s: &str) -> (usize, String) {
    err_bytes(s.as_bytes())
}

fn err_bytes(s: &[u8]) -> (usize, String) {
    match parse_text(s, NameScheme::Legacy) {
        Ok(f) => panic!("{s:?} parsed: {f:?}"),
        Err(e) => (e.line, e.msg),
    }
}

fn assert_err(s: &str, line: usize, msg: &str) {
    assert_eq!(err(s), (line, msg.to_owned()), "input {s:?}");
}

fn text(s: &str) -> String {
    String::from_utf8(families_to_text(&parse(s).expect("should parse"))).expect("utf-8")
}

#[test]
fn error_display() {
    let e = parse("a abc\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"text format parsing error in line 1: expected float as value, got "abc""#
    );
}

#[test]
fn empty_and_blank_inputs() {
    for s in [
        "",
        "\n",
        "   ",
        "\n\n  \t\n",
        "# just a comment\n",
        "# HELP a x\n# TYPE a gauge\n",
    ] {
        assert_eq!(parse(s).unwrap(), vec![], "{s:?}");
    }
}

#[test]
fn value_errors() {
    assert_err(
        "a 1\nb 2\nc abc\n",
        3,
        r#"expected float as value, got "abc""#,
    );
    assert_err("a 1\r\n", 1, r#"expected float as value, got "1\r""#);
    assert_err("a\n", 1, r#"expected float as value, got """#);
    assert_err("a{}\n", 1, r#"expected float as value, got """#);
    assert_err("a 0x1p3\n", 1, r#"expected float as value, got "0x1p3""#);
    assert_err("a 0x10\n", 1, r#"expected float as value, got "0x10""#);
    assert_err("a 1_000\n", 1, r#"expected float as value, got "1_000""#);
    assert_err("a 1e400\n", 1, r#"expected float as value, got "1e400""#);
    assert_err("a -1e400\n", 1, r#"expected float as value, got "-1e400""#);
    assert_err("a +nan\n", 1, r#"expected float as value, got "+nan""#);
    assert_err("a infin\n", 1, r#"expected float as value, got "infin""#);
    assert_err("a 1e\n", 1, r#"expected float as value, got "1e""#);
    assert_err("a .\n", 1, r#"expected float as value, got ".""#);
    assert_err("a-b 1\n", 1, r#"expected float as value, got "-b""#);
    assert_err("a \u{e9}\n", 1, r#"expected float as value, got "é""#);
    assert_err("a \x01\n", 1, r#"expected float as value, got "\x01""#);
}

#[test]
fn accepted_values() {
    let cases: &[(&str, f64)] = &[
        ("1", 1.0),
        ("-1.5", -1.5),
        ("+2", 2.0),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        (".5", 0.5),
        ("5.", 5.0),
        ("007", 7.0),
        ("1e-400", 0.0),
        ("Inf", f64::INFINITY),
        ("+Inf", f64::INFINITY),
        ("-Inf", f64::NEG_INFINITY),
        ("inf", f64::INFINITY),
        ("+inf", f64::INFINITY),
        ("INF", f64::INFINITY),
        ("Infinity", f64::INFINITY),
        ("-infinity", f64::NEG_INFINITY),
        ("1.7976931348623157e308", f64::MAX),
    ];
    for &(s, want) in cases {
        let got = parse(&format!("a {s}\n")).unwrap()[0].metric[0]
            .untyped
            .unwrap()
            .value();
        assert_eq!(got, want, "{s}");
    }
    for s in ["NaN", "nan", "NAN", "nAn"] {
        let got = parse(&format!("a {s}\n")).unwrap()[0].metric[0]
            .untyped
            .unwrap()
            .value();
        assert!(got.is_nan(), "{s}");
    }
}

#[test]
fn end_of_input_errors() {
    assert_err("a 1", 1, "unexpected end of input stream");
    assert_err("a 1\nb 2", 2, "unexpected end of input stream");
    assert_err("a", 1, "unexpected end of input stream");
    assert_err("a{b=\"c\"", 1, "unexpected end of input stream");
    assert_err("a{b=\"c", 1, "unexpected end of input stream");
    assert_err("a 1 2", 1, "unexpected end of input stream");
    assert_err("#", 1, "unexpected end of input stream");
    assert_err("# comment", 1, "unexpected end of input stream");
    assert_err("# HELP a text", 1, "unexpected end of input stream");
    assert_err("# TYPE a gauge", 1, "unexpected end of input stream");
}

#[test]
fn trailing_garbage_and_timestamps() {
    assert_err("a 1 \n", 1, r#"expected integer as timestamp, got """#);
    assert_err("a 1 x\n", 1, r#"expected integer as timestamp, got "x""#);
    assert_err(
        "a 1 1.5\n",
        1,
        r#"expected integer as timestamp, got "1.5""#,
    );
    assert_err(
        "a 1 9223372036854775808\n",
        1,
        r#"expected integer as timestamp, got "9223372036854775808""#,
    );
    assert_err("a 1 2 \n", 1, r#"spurious string after timestamp: " ""#);
    assert_err("a 1 2 3\n", 1, r#"spurious string after timestamp: " 3""#);
    assert_err(
        "a 1 2\r\n",
        1,
        r#"expected integer as timestamp, got "2\r""#,
    );
    let f = parse("a 1 -1234\nb 2 +5\n").unwrap();
    assert_eq!(f[0].metric[0].timestamp_ms, Some(-1234));
    assert_eq!(f[1].metric[0].timestamp_ms, Some(5));
}

#[test]
fn help_and_type_errors() {
    assert_err(
        "# HELP x a\n# HELP x b\n",
        2,
        r#"second HELP line for metric name "x""#,
    );
    assert_err(
        "# TYPE x gauge\n# TYPE x gauge\n",
        2,
        r#"second TYPE line for metric name "x", or TYPE reported after samples"#,
    );
    assert_err(
        "x 1\n# TYPE x gauge\n",
        2,
        r#"second TYPE line for metric name "x", or TYPE reported after samples"#,
    );
    assert_err(
        "# TYPE s summary\n# TYPE s_count counter\n",
        2,
        r#"second TYPE line for metric name "s", or TYPE reported after samples"#,
    );
    assert_err("# TYPE x foo\n", 1, r#"unknown metric type "foo""#);
    assert_err("# TYPE x info\n", 1, r#"unknown metric type "info""#);
    assert_err(
        "# TYPE x stateset\n",
        1,
        r#"unknown metric type "stateset""#,
    );
    assert_err(
        "# TYPE x gaugehistogram\n",
        1,
        r#"unknown metric type "gaugehistogram""#,
    );
    assert_err(
        "# TYPE x gauge_histogram\n",
        1,
        r#"unknown metric type "gauge_histogram""#,
    );
    assert_err("# TYPE x gauge \n", 1, r#"unknown metric type "gauge ""#);
    assert_err("# TYPE x gauge\r\n", 1, r#"unknown metric type "gauge\r""#);
    assert_err("# HELP 1x y\n", 1, "invalid metric name in comment");
    assert_err("# HELP x.y z\n", 1, "invalid metric name in comment");
    assert_err("# HELP x a\\tb\n", 1, r"invalid escape sequence '\t'");
    assert_err("# HELP x a\\\"b\n", 1, r#"invalid escape sequence '\"'"#);
}

#[test]
fn help_and_type_lenience() {
    // Type names in any case; leading blanks stripped, trailing kept in HELP.
    let f = parse("# TYPE a COUNTER\n# HELP a  some  text \na 1\n").unwrap();
    assert_eq!(f[0].r#type(), MetricType::Counter);
    assert_eq!(f[0].help(), "some  text ");
    let f = parse("#HELP a x\\ny\\\\z\na 1\n").unwrap();
    assert_eq!(f[0].help(), "x\ny\\z");
    // Borrowed from the body unless it had escapes; invalid UTF-8 made valid either way.
    let body = "# HELP a plain\n# HELP b \\\\x\\ny\na 1\nb 2\n";
    let parsed = parse_text_borrowed(body.as_bytes(), NameScheme::Legacy).unwrap();
    let helps: Vec<_> = parsed.families().map(|f| f.help.clone().unwrap()).collect();
    assert!(matches!(helps[0], Cow::Borrowed("plain")), "{helps:?}");
    assert!(
        matches!(&helps[1], Cow::Owned(h) if h == "\\x\ny"),
        "{helps:?}"
    );
    for (body, want) in [
        (&b"# HELP a x\xffy\na 1\n"[..], "x\u{fffd}y"),
        (b"# HELP a \\\\\xff\na 1\n", "\\\u{fffd}"),
    ] {
        assert_eq!(
            parse_text(body, NameScheme::Legacy).unwrap()[0].help(),
            want
        );
    }
    // Go's ToUpper turns the long s into S.
    let f = parse("# TYPE a \u{17f}ummary\na_count 1\n").unwrap();
    assert_eq!(f[0].r#type(), MetricType::Summary);
    // Lines with a name but nothing after it are fine.
    let f = parse("# HELP a\n# TYPE a\n# TYPE a  \n# HELP a \n# foo\n#\n  # x y z\na 1\n").unwrap();
    assert_eq!(f[0].help, None);
    assert_eq!(f[0].r#type(), MetricType::Untyped);
}

#[test]
fn label_errors() {
    assert_err(
        "a{b=\"1\",b=\"2\"} 1\n",
        1,
        r#"duplicate label names for metric "a""#,
    );
    assert_err(
        "a{__name__=\"x\"} 1\n",
        1,
        r#"label name "__name__" is reserved"#,
    );
    assert_err("a{__name__} 1\n", 1, r#"label name "__name__" is reserved"#);
    assert_err("a{1=\"x\"} 1\n", 1, r#"invalid label name for metric "a""#);
    assert_err(
        "a{b.c=\"x\"} 1\n",
        1,
        r#"expected '=' after label name, found '.'"#,
    );
    assert_err(
        "a{b \"x\"} 1\n",
        1,
        r#"expected '=' after label name, found '"'"#,
    );
    assert_err("a{b\n", 1, r"expected '=' after label name, found '\n'");
    assert_err(
        "a{b=x} 1\n",
        1,
        r#"expected '"' at start of label value, found 'x'"#,
    );
    assert_err("a{b=\"\\t\"} 1\n", 1, r"invalid escape sequence '\t'");
    assert_err(
        "a{b=\"x\ny\"} 1\n",
        1,
        r#"label value "x" contains unescaped new-line"#,
    );
    assert_err(
        "a{b=\"\\\\x\ny\"} 1\n",
        1,
        r#"label value "\\x" contains unescaped new-line"#,
    );
    assert_err(
        "a{b=\"x\" c=\"y\"} 1\n",
        1,
        r#"unexpected end of label value "x""#,
    );
    assert_eq!(
        err_bytes(b"a 1\na{b=\"\xff\"} 1\n"),
        (2, r#"invalid label value "\xff""#.to_owned())
    );
    assert_eq!(
        err_bytes(b"a{b=\"\\\"\xc3\"} 1\n"),
        (1, r#"invalid label value "\"\xc3""#.to_owned())
    );
    assert_err("{a=\"b\"} 1\n", 1, "invalid metric name");
    assert_err("\"a\" 1\n", 1, "invalid metric name");
    assert_err(
        "# TYPE s summary\ns{quantile=\"x\"} 1\n",
        2,
        r#"expected float as value for 'quantile' label, got "x""#,
    );
    assert_err(
        "# TYPE h histogram\nh_bucket{le=\"0x1\"} 1\n",
        2,
        r#"expected float as value for 'le' label, got "0x1""#,
    );
}

#[test]
fn labels_and_escapes() {
    let f = parse("a{x=\"q\\\"uo\\\\te\\nnl\",y=\"\"} 1\n  a { z = \"é\" , } 2\na{}3\na{\t}\t4\n")
        .unwrap();
    assert_eq!(f.len(), 1);
    let m = &f[0].metric;
    assert_eq!(m.len(), 4);
    assert_eq!(m[0].label[0].value(), "q\"uo\\te\nnl");
    assert_eq!(m[0].label[1].value(), "");
    assert_eq!(m[1].label[0].name(), "z");
    assert_eq!(m[1].label[0].value(), "é");
    assert!(m[2].label.is_empty());
    assert_eq!(m[3].untyped.unwrap().value(), 4.0);
    // `le` is an ordinary label outside histograms, and `quantile` outside summaries.
    let f = parse("g{le=\"1\",quantile=\"x\"} 1\n").unwrap();
    assert_eq!(f[0].metric[0].label.len(), 2);
}

#[test]
fn families_typed_and_interleaved() {
    let f = parse("# TYPE c counter\nc 1\ng 2\nc{a=\"b\"} 3\n# TYPE g2 gauge\ng2 4\n").unwrap();
    let names: Vec<_> = f.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["c", "g", "g2"]);
    assert_eq!(f[0].metric.len(), 2);
    assert_eq!(f[0].metric[1].counter.as_ref().unwrap().value(), 3.0);
    assert_eq!(f[1].r#type, Some(MetricType::Untyped as i32));
    assert_eq!(f[2].metric[0].gauge.unwrap().value(), 4.0);
}

#[test]
fn summary_folding() {
    let input = "# TYPE s summary\n\
        s{a=\"1\",quantile=\"0.5\"} 10\n\
        s{a=\"2\",quantile=\"0.5\"} 20\n\
        s_sum{a=\"1\"} 100\n\
        other 1\n\
        s{quantile=\"0.9\",a=\"1\"} 11\n\
        s_count{a=\"1\"} 7.9\n\
        s_count{a=\"2\"} 3\n";
    let f = parse(input).unwrap();
    assert_eq!(f.len(), 2);
    let s = &f[0];
    assert_eq!(s.metric.len(), 2);
    let m = s.metric[0].summary.as_ref().unwrap();
    assert_eq!(s.metric[0].label.len(), 1);
    assert_eq!(m.quantile.len(), 2);
    assert_eq!(m.quantile[1].quantile(), 0.9);
    assert_eq!(m.quantile[1].value(), 11.0);
    assert_eq!(m.sample_sum(), 100.0);
    assert_eq!(m.sample_count(), 7);
    assert_eq!(s.metric[1].summary.as_ref().unwrap().sample_count(), 3);
    // _bucket does not fold into a summary.
    let f = parse("# TYPE s summary\ns_bucket 1\n").unwrap();
    assert_eq!(f[0].name(), "s_bucket");
    // Without a TYPE line nothing folds.
    let f = parse("s 1\ns_sum 2\n").unwrap();
    assert_eq!(f.len(), 2);
}

#[test]
fn histogram_folding() {
    let input = "# HELP h help\n# TYPE h histogram\n\
        h_bucket{le=\"0.5\"} 1\n\
        h_bucket{le=\"+Inf\"} 3\n\
        h_sum 4.5\n\
        h_count 3\n";
    let f = parse(input).unwrap();
    assert_eq!(f.len(), 1);
    let h = f[0].metric[0].histogram.as_ref().unwrap();
    assert_eq!(h.bucket.len(), 2);
    assert_eq!(h.bucket[1].upper_bound(), f64::INFINITY);
    assert_eq!(h.bucket[1].cumulative_count(), 3);
    assert_eq!(h.sample_sum(), 4.5);
    assert_eq!(h.sample_count(), 3);
    assert_eq!(text(input), input);
    // HELP through a suffixed name lands on the histogram.
    assert_err(
        "# TYPE h histogram\n# HELP h a\n# HELP h_count b\n",
        3,
        r#"second HELP line for metric name "h""#,
    );
    // The exact family name wins over folding.
    let f = parse("h_count 1\n# TYPE h histogram\nh_count 2\n").unwrap();
    assert_eq!(f[0].name(), "h_count");
    assert_eq!(f[0].metric.len(), 2);
}

#[test]
fn only_help_or_type_families_are_dropped() {
    let f = parse("# HELP a x\n# TYPE b gauge\nc 1\n").unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].name(), "c");
}

#[test]
fn openmetrics_bodies_parse_as_text() {
    let f = parse("# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n").unwrap();
    assert_eq!(f.len(), 1);
    assert_err(
        "# TYPE a info\na_info 1\n# EOF\n",
        1,
        r#"unknown metric type "info""#,
    );
}

#[test]
fn utf8_names() {
    let p = |s: &str| parse_text(s.as_bytes(), NameScheme::Utf8);
    let f = p("# HELP \"my.metric\" h\n{\"my.metric\", \"a.b\"=\"v\", c=\"d\"} 1\n{\"my.metric\"} 2\n{plain} 3\n")
        .unwrap();
    assert_eq!(f[0].name(), "my.metric");
    assert_eq!(f[0].help(), "h");
    assert_eq!(f[0].metric.len(), 2);
    assert_eq!(f[0].metric[0].label[0].name(), "a.b");
    assert_eq!(f[0].metric[0].label[1].name(), "c");
    assert_eq!(f[1].name(), "plain");
    let e = p("{\"a\", \"b\"} 1\n").unwrap_err();
    assert_eq!(e.msg, r#"multiple metric names for metric "a""#);
    let e = p("{\"a\" x} 1\n").unwrap_err();
    assert_eq!(e.msg, "unexpected end of metric name 'x'");
    let e = p("{\"a\nb\"} 1\n").unwrap_err();
    assert_eq!(e.msg, r#"metric name "a" contains unescaped new-line"#);
    let e = p("{\"\"} 1\n").unwrap_err();
    assert_eq!(e.msg, "invalid metric name");
    // Legacy scheme refuses all of it.
    assert_err("{\"a\"} 1\n", 1, "invalid metric name");
    assert_err(
        "a{\"b\"=\"c\"} 1\n",
        1,
        r#"invalid label name for metric "a""#,
    );
    // Round trip through the encoder's quoted form.
    let input = "# HELP \"a.b\" x\n# TYPE \"a.b\" gauge\n{\"a.b\",\"c d\"=\"e\",f=\"g\"} 1\n";
    let f = p(input).unwrap();
    assert_eq!(String::from_utf8(families_to_text(&f)).unwrap(), input);
}

#[test]
fn round_trip_through_encoder() {
    let input = "# HELP a Help with \\\\ and \\n.\n# TYPE a counter\n\
        a{l=\"x\\\"y\\\\z\\n\"} 1.5e+10\n\
        a 0.0001\n\
        # TYPE s summary\n\
        s{quantile=\"0.5\"} NaN\n\
        s{quantile=\"0.99\"} -Inf\n\
        s_sum 1e-05\n\
        s_count 123456\n\
        # TYPE u untyped\n\
        u 1 42\n";
    assert_eq!(text(input), input);
}

#[test]
fn histogram_without_inf_bucket_gets_one() {
    let input = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 5\n";
    assert_eq!(
        text(input),
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 5\nh_sum 0\nh_count 5\n"
    );
}

const SAMPLE: &str = "# HELP h Help \\\\ \\n.\n# TYPE h histogram\n\
    h_bucket{a=\"x\\\"\",le=\"0.5\"} 1\nh_bucket{a=\"x\\\"\",le=\"+Inf\"} 2 123\nh_sum{a=\"x\\\"\"} 1.5\n\
    h_count{a=\"x\\\"\"} 2\n# TYPE s summary\ns{quantile=\"0.9\"} NaN\ns_sum 1e-3\ns_count 3\n\
    {\"u.tf8\",\"l.b\"=\"v\"} -Inf\nplain{x=\"\"} 7\n";

/// The oracle of the never-panic properties, for whatever input the parser accepts: what the
/// legacy scheme accepts the UTF-8 scheme reads the same (it only allows more names), and the
/// encoder and the parser agree on it: written out and read back it writes out the same text
/// (a fixed point after one round, as the text format normalises some things once, such as -0
/// and a blank HELP).
fn check_accepted_text(input: &[u8]) -> Result<(), TestCaseError> {
    let legacy = parse_text(input, NameScheme::Legacy);
    let utf8 = parse_text(input, NameScheme::Utf8);
    if let Ok(families) = &legacy {
        let utf8 = utf8.as_ref().map_err(|e| {
            TestCaseError::fail(format!("legacy accepted, UTF-8 refused: {e}"))
        })?;
        prop_assert_eq!(format!("{families:?}"), format!("{utf8:?}"));
    }
    if let Ok(families) = utf8 {
        let text = families_to_text(&families);
        let again = parse_text(&text, NameScheme::Utf8).map_err(|e| {
            TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&text)))
        })?;
        let rewritten = families_to_text(&again);
        prop_assert_eq!(
            String::from_utf8_lossy(&rewritten),
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_accepted_text(&bytes)?;
    }

    #[test]
    fn parse_never_panics_on_mutated_bodies(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut body = SAMPLE.as_bytes().to_vec();
        for (at, byte, op) in edits {
            if body.is_empty() {
                break;
            }
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => {
                    body.remove(i);
                }
            }
        }
        check_accepted_text(&body)?;
    }

    #[test]
    fn parse_never_panics_on_token_soup(
        parts in proptest::collection::vec(
            prop::sample::select(vec![
                "a", "h", "h_bucket", "s_sum", "_count", "{", "}", "\"", "=", ",", " ", "\t", "\n",
                "\\", "le", "quantile", "1", "NaN", "+Inf", "# ", "HELP ", "TYPE ", "summary",
                "histogram", "\"x.y\"", "\u{e9}", "\r",
            ]),
            0..40,
        ),
    ) {
        let body = parts.concat();
        check_accepted_text(body.as_bytes())?;
    }
}

/// [`parse_text`] without the parser's shortcuts for repeats.
fn parse_text_without_shortcuts(
    input: &[u8],
    scheme: NameScheme,
) -> Result<Vec<MetricFamily>, TextParseError> {
    let mut parser = Parser::new(input, scheme);
    parser.shortcuts = false;
    parser.run()?;
    Ok(parser.finish().to_families())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The shortcuts (a repeated name compared instead of scanned, a line folded into the
    /// metric of the line before without its key) give the same families or the same error,
    /// on bodies of repeated and prefixed names, reordered and repeated labels.
    #[test]
    fn shortcuts_change_nothing(
        lines in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "h", "h_bucket", "h_sum", "h_count", "h_bucket_x", "h:x", "s", "s_sum",
                    "s_count", "s_bucket", "c", "c_total", "\"h\"", "\"h.x\"", "# HELP h",
                    "# TYPE h histogram", "# TYPE s summary", "# TYPE c counter", "# HELP c",
                    "# TYPE h_bucket gauge", "{\"h\"", "{\"s.x\"", "{\"h.x\"", "h.x",
                    "{\"h x\"", "h",
                ]),
                proptest::collection::vec(
                    prop::sample::select(vec![
                        "a=\"1\"", "a=\"2\"", "b=\"1\"", "le=\"0.5\"", "le=\"+Inf\"",
                        "quantile=\"0.9\"", "a=\"x\\\"y\"", " b=\"1\" ",
                    ]),
                    0..4,
                ),
                prop::sample::select(vec![" 1", " 2.5", "\t3", " NaN", " 1 100", "", " x"]),
            ),
            0..14,
        ),
        typed in any::<bool>(),
    ) {
        let mut body = String::new();
        if typed {
            body.push_str("# TYPE h histogram\n# TYPE s summary\n");
        }
        for (head, labels, value) in &lines {
            body.push_str(head);
            if head.starts_with('#') {
                body.push_str(" text\n");
                continue;
            }
            let open = head.starts_with('{');
            if !labels.is_empty() || open {
                if !open {
                    body.push('{');
                }
                for l in labels {
                    body.push(',');
                    body.push_str(l);
                }
                if !open {
                    // `{,a="1"}` is an error; drop the first comma.
                    let at = body.rfind('{').unwrap_or(0);
                    if body[at + 1..].starts_with(',') {
                        body.remove(at + 1);
                    }
                }
                body.push('}');
            }
            body.push_str(value);
            body.push('\n');
        }
        // Compared as protobuf bytes: exact to the bit, and NaN equals itself.
        let bytes = |r: Result<Vec<MetricFamily>, TextParseError>| {
            r.map(|fs| fs.iter().map(prost::Message::encode_to_vec).collect::<Vec<_>>())
        };
        for scheme in [NameScheme::Legacy, NameScheme::Utf8] {
            prop_assert_eq!(
                bytes(parse_text(body.as_bytes(), scheme)),
                bytes(parse_text_without_shortcuts(body.as_bytes(), scheme)),
                "{:?}", body
            );
        }
    }
}

#[test]
fn sample_body_parses() {
    let f = parse_text(SAMPLE.as_bytes(), NameScheme::Utf8).unwrap();
    let names: Vec<_> = f.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["h", "s", "u.tf8", "plain"]);
}
