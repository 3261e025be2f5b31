//! Numbers as Go writes and reads them: expfmt parses samples with `strconv.ParseFloat` and
//! writes them with `strconv.FormatFloat(v, 'g', -1, 64)`, so both directions follow Go's rules
//! (spellings of infinity and NaN, the exponent form, shortest round-trip digits) for bodies
//! identical to upstream's.

use crate::exposition::utf8;

/// The NaN Go's `math.NaN()` returns, so NaN samples are bit-identical to upstream's.
const GO_NAN: f64 = f64::from_bits(0x7FF8_0000_0000_0001);

/// 10^0 ..= 10^15, each exactly representable in an f64.
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Go's `strconv.ParseFloat(s, 64)` as expfmt calls it: decimal notation or `Inf`/`Infinity`
/// (any case, optional sign) or `NaN` (any case, no sign); no hex, no underscores, and values
/// beyond the f64 range are errors (underflow to zero is not).
pub(super) fn parse_float(s: &[u8]) -> Option<f64> {
    let (neg, signed, rest) = match s.split_first() {
        Some((b'+', rest)) => (false, true, rest),
        Some((b'-', rest)) => (true, true, rest),
        _ => (false, false, s),
    };
    if rest.eq_ignore_ascii_case(b"inf") || rest.eq_ignore_ascii_case(b"infinity") {
        return Some(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if !signed && rest.eq_ignore_ascii_case(b"nan") {
        return Some(GO_NAN);
    }
    let mut i = 0;
    let mut mantissa_digits = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        i += 1;
        mantissa_digits += 1;
    }
    if i < rest.len() && rest[i] == b'.' {
        i += 1;
        while i < rest.len() && rest[i].is_ascii_digit() {
            i += 1;
            mantissa_digits += 1;
        }
    }
    if mantissa_digits == 0 {
        return None;
    }
    if i < rest.len() && (rest[i] == b'e' || rest[i] == b'E') {
        i += 1;
        if i < rest.len() && (rest[i] == b'+' || rest[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < rest.len() && rest[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != rest.len() {
        return None;
    }
    // Plain integers below 2^53 (counts, bucket counts, most counters) are exact in an f64:
    // no need for the general decimal conversion.
    if i == mantissa_digits && i <= 15 {
        let n = rest.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        let v = n as f64;
        return Some(if neg { -v } else { v });
    }
    // Short decimals without an exponent (bucket bounds, quantiles, sums): with at most 15
    // digits the digits are an exact integer and 10^k an exact power, so one correctly
    // rounded division gives the correctly rounded value (Clinger's fast path).
    if i == mantissa_digits + 1 && mantissa_digits <= 15 {
        let (n, k) = rest
            .iter()
            .fold((0u64, None::<usize>), |(n, k), &d| match d {
                b'.' => (n, Some(0)),
                d => (n * 10 + u64::from(d - b'0'), k.map(|k| k + 1)),
            });
        let v = n as f64 / EXACT_POWERS_OF_TEN[k.unwrap_or(0)];
        return Some(if neg { -v } else { v });
    }
    // Checked above to be ASCII decimal syntax that Rust parses with correct rounding too.
    let v: f64 = utf8(s)?.parse().ok()?;
    if v.is_infinite() {
        return None;
    }
    Some(v)
}

/// Writes `v` in decimal (timestamps, and floats that are small integers).
pub(super) fn write_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut n = v.unsigned_abs();
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Formats like expfmt's writeFloat: `1`, `0` (also for -0), `-1`, `NaN`, `+Inf`, `-Inf`, else Go's
/// `strconv.FormatFloat(v, 'g', -1, 64)`: shortest round-trip digits, exponent form when the
/// decimal exponent is < -4 or >= 6 (`1e+06`, `123456`, `0.0001`, `1e-05`,
/// `1.7956715203070993e+09`).
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    // Integers below 1e6 (0 and -0 included) print as plain digits in Go's shortest 'g' format
    // (1e6 and up switch to an exponent): the common case of counts, without the general
    // shortest-digits conversion.
    if v.fract() == 0.0 && v.abs() < 1e6 {
        write_int(out, v as i64);
        return;
    }
    write_float_memo(out, v);
}

/// The longest output of [`write_float_general`]: `-1.7976931348623157e+308`.
const FLOAT_TEXT_MAX: usize = 24;

/// [`write_float_general`] through a small per-thread cache keyed by the value's bits: the
/// bucket bounds and quantiles of a histogram or summary (and often its sums) come back with
/// every push, and the shortest-digits conversion is the costliest step of writing a sample.
fn write_float_memo(out: &mut Vec<u8>, v: f64) {
    const SLOTS: usize = 64;
    type Slot = (u64, u8, [u8; FLOAT_TEXT_MAX]);
    thread_local! {
        // Bits 0 never reach this path (0.0 is an integer), so they mark an empty slot.
        static MEMO: std::cell::RefCell<[Slot; SLOTS]> =
            const { std::cell::RefCell::new([(0, 0, [0; FLOAT_TEXT_MAX]); SLOTS]) };
    }
    let bits = v.to_bits();
    let slot = (bits ^ (bits >> 29) ^ (bits >> 52)) as usize % SLOTS;
    MEMO.with(|cell| {
        let mut memo = cell.borrow_mut();
        let (key, len, text) = &mut memo[slot];
        if *key != bits || bits == 0 {
            let start = out.len();
            write_float_general(out, v);
            let written = &out[start..];
            if written.len() <= FLOAT_TEXT_MAX {
                *key = bits;
                *len = written.len() as u8;
                text[..written.len()].copy_from_slice(written);
            }
            return;
        }
        out.extend_from_slice(&text[..usize::from(*len)]);
    })
}

/// [`write_float`] without the integer fast path.
fn write_float_general(out: &mut Vec<u8>, v: f64) {
    if v == 0.0 {
        out.push(b'0');
        return;
    }
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v).as_bytes();
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => (&s[..i], parse_small_int(&s[i + 1..])),
        None => (s, 0),
    };
    // Collect the significant digits and the decimal point position: value = 0.d1d2... * 10^dp.
    let mut digits = [0u8; 32];
    let mut nd = 0usize;
    let mut int_len = 0i32;
    let mut seen_point = false;
    let mut leading = true;
    for &b in mantissa {
        if b == b'.' {
            seen_point = true;
            continue;
        }
        if !seen_point {
            int_len += 1;
        }
        if leading && b == b'0' {
            // A leading zero shifts the point left by one place.
            int_len -= 1;
            continue;
        }
        leading = false;
        if nd < digits.len() {
            digits[nd] = b;
            nd += 1;
        }
    }
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let digits = &digits[..nd];
    let dp = int_len + exp;
    if neg {
        out.push(b'-');
    }
    let exp10 = dp - 1;
    if !(-4..6).contains(&exp10) {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        let (sign, mut e) = if exp10 < 0 {
            (b'-', -exp10)
        } else {
            (b'+', exp10)
        };
        out.push(sign);
        if e >= 100 {
            out.push(b'0' + (e / 100) as u8);
            e %= 100;
            out.push(b'0' + (e / 10) as u8);
        } else {
            out.push(b'0' + (e / 10) as u8);
        }
        out.push(b'0' + (e % 10) as u8);
    } else if dp <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-dp) as usize));
        out.extend_from_slice(digits);
    } else {
        let dp = dp as usize;
        if dp >= nd {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', dp - nd));
        } else {
            out.extend_from_slice(&digits[..dp]);
            out.push(b'.');
            out.extend_from_slice(&digits[dp..]);
        }
    }
}

/// Parses ryu's exponent (`-7`, `16`); ryu never writes anything else there.
fn parse_small_int(s: &[u8]) -> i32 {
    let (neg, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    let n = s
        .iter()
        .fold(0i32, |n, &b| n * 10 + i32::from(b.wrapping_sub(b'0')));
    if neg {
        -n
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn float(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn float_formatting_matches_go() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1795671520.3070993, "1.7956715203070993e+09"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (123456.0, "123456"),
            (100000.0, "100000"),
            (999999.0, "999999"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (0.1, "0.1"),
            (0.5, "0.5"),
            (-2.5, "-2.5"),
            (2.5e-3, "0.0025"),
            (123.456, "123.456"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (1.5e300, "1.5e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (-1e-300, "-1e-300"),
            (42.0, "42"),
            (1e15, "1e+15"),
            (123456789012.0, "1.23456789012e+11"),
            (0.30000000000000004, "0.30000000000000004"),
        ];
        for &(v, want) in cases {
            assert_eq!(float(v), want, "{v:e}");
        }
    }

    proptest! {
        #[test]
        fn short_decimals_parse_like_the_general_conversion(
            int in "[0-9]{0,8}",
            frac in "[0-9]{0,8}",
            sign in proptest::sample::select(vec!["", "-", "+"]),
        ) {
            let text = format!("{sign}{int}.{frac}");
            let want = if int.is_empty() && frac.is_empty() {
                None
            } else {
                text.parse::<f64>().ok()
            };
            let got = parse_float(text.as_bytes());
            prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{}", text);
        }

        #[test]
        fn integer_fast_paths_agree_with_the_general_conversions(i in -2_000_000i64..2_000_000) {
            let v = i as f64;
            let mut general = Vec::new();
            write_float_general(&mut general, v);
            prop_assert_eq!(float(v), String::from_utf8(general).unwrap_or_default());
            let abs = i.unsigned_abs();
            for text in [i.to_string(), format!("+{abs}"), format!("-00{abs}")] {
                let want: f64 = text.parse().unwrap_or(f64::NAN);
                prop_assert_eq!(
                    parse_float(text.as_bytes()),
                    Some(want),
                    "{}", text
                );
            }
        }

        #[test]
        fn memoized_floats_agree_with_the_general_conversion(
            values in proptest::collection::vec(
                prop_oneof![any::<f64>(), (0u32..200).prop_map(|i| f64::from(i) / 64.0)],
                1..200,
            )
        ) {
            // Twice over, so that the second round reads what the first one cached, and with
            // enough values that slots are overwritten by colliding ones.
            for _ in 0..2 {
                for &v in &values {
                    let mut memo = vec![b'x'];
                    write_float_memo(&mut memo, v);
                    let mut general = vec![b'x'];
                    write_float_general(&mut general, v);
                    prop_assert_eq!(&memo, &general, "{}", v);
                }
            }
        }

        #[test]
        fn float_round_trips(v in any::<f64>()) {
            let s = float(v);
            let back = parse_float(s.as_bytes());
            prop_assert!(back.is_some(), "{s}");
            let back = back.unwrap_or_default();
            prop_assert!(back == v || (back.is_nan() && v.is_nan()), "{v} {s} {back}");
        }
    }
}
