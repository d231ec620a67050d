//! Durations as operators write them: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1m30s"`.
//!
//! A duration is one or more `<number><unit>` parts that are added up. The number is
//! decimal and may have a fraction (`"1.5s"`); the unit is `ms`, `s`, `m`, `h` or `d`. A bare
//! number is refused: `"30"` could mean seconds or milliseconds, and a config that guesses
//! wrong fails silently.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a duration such as `"500ms"`, `"30s"`, `"5m"`, `"1h"` or `"1m30s"`.
///
/// Refuses an empty string, a negative value, a number without a unit, an unknown unit
/// and a value too large for [`Duration`]. Zero (`"0s"`) parses; callers that need a
/// positive duration check that themselves.
///
/// # Errors
///
/// A message saying what is wrong with `s`, for showing to the user as is.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration (write e.g. \"500ms\", \"30s\", \"5m\")".into());
    }
    if text.starts_with('-') {
        return Err(format!("negative duration `{s}` is not allowed"));
    }
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (nanos, tail) = parse_part(rest, s)?;
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(|| too_large(s))?;
        rest = tail;
    }
    nanos_to_duration(total_nanos).ok_or_else(|| too_large(s))
}

/// Parses one `<number><unit>` part from the front of `rest`; returns its value in
/// nanoseconds and what follows it. `whole` is the full input, for messages.
fn parse_part<'a>(rest: &'a str, whole: &str) -> Result<(u128, &'a str), String> {
    let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, tail) = rest.split_at(number_len);
    if number.is_empty() {
        return Err(format!("`{whole}` is not a duration: expected a number at `{rest}`"));
    }
    let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
    let (unit, tail) = tail.split_at(unit_len);
    if unit.is_empty() {
        return Err(format!("`{whole}` has no unit: write e.g. \"{number}s\" or \"{number}ms\""));
    }
    let unit_nanos = unit_nanos(unit)
        .ok_or_else(|| format!("unknown unit `{unit}` in `{whole}` (use ms, s, m, h or d)"))?;
    let nanos = scale(number, unit_nanos, whole)?;
    Ok((nanos, tail))
}

/// Nanoseconds in one `unit`, or `None` for a unit we do not accept.
fn unit_nanos(unit: &str) -> Option<u128> {
    match unit {
        "ms" => Some(NANOS_PER_SEC / 1_000),
        "s" => Some(NANOS_PER_SEC),
        "m" => Some(60 * NANOS_PER_SEC),
        "h" => Some(3_600 * NANOS_PER_SEC),
        "d" => Some(86_400 * NANOS_PER_SEC),
        _ => None,
    }
}

/// `number` (decimal, optional fraction) times `unit_nanos`, truncated to whole
/// nanoseconds.
fn scale(number: &str, unit_nanos: u128, whole: &str) -> Result<u128, String> {
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() || (number.contains('.') && frac_part.is_empty()) {
        return Err(format!("`{whole}` is not a duration: bad number `{number}`"));
    }
    if frac_part.contains('.') {
        return Err(format!("`{whole}` is not a duration: bad number `{number}`"));
    }
    // Parsing as u128 cannot overflow for any plausible input; a digit string long
    // enough to overflow is refused as too large rather than misread.
    let int: u128 = int_part.parse().map_err(|_| too_large(whole))?;
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(|| too_large(whole))?;
    // Digits beyond nanosecond precision add nothing, so at most 18 are looked at
    // (1h has 3.6e12 ns, so 18 digits of fraction keep every meaningful one).
    let frac_digits = &frac_part[..frac_part.len().min(18)];
    if !frac_digits.is_empty() {
        let frac: u128 = frac_digits.parse().map_err(|_| too_large(whole))?;
        let denominator = 10u128.pow(frac_digits.len() as u32);
        nanos = nanos.checked_add(frac * unit_nanos / denominator).ok_or_else(|| too_large(whole))?;
    }
    Ok(nanos)
}

/// Converts a nanosecond count to a [`Duration`], or `None` when it does not fit.
fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    // The remainder is below 1e9, so it always fits in u32.
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Some(Duration::new(secs, sub))
}

fn too_large(whole: &str) -> String {
    format!("duration `{whole}` is too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
    }

    #[test]
    fn adds_up_compound_durations() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(Duration::from_millis(3_723_004)));
    }

    #[test]
    fn accepts_fractions_and_surrounding_space() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn zero_parses_so_callers_decide() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_empty_and_blank() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("   ").unwrap_err().contains("empty"));
    }

    #[test]
    fn refuses_negative() {
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn refuses_a_number_without_unit() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("1m30").unwrap_err().contains("no unit"));
    }

    #[test]
    fn refuses_unknown_units_and_junk() {
        assert!(parse_duration("5w").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_duration("5 s").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").unwrap_err().contains("expected a number"));
        assert!(parse_duration("1..5s").unwrap_err().contains("bad number"));
        assert!(parse_duration(".5s").unwrap_err().contains("bad number"));
        assert!(parse_duration("5.s").unwrap_err().contains("bad number"));
    }

    #[test]
    fn refuses_overflow() {
        let huge = format!("{}h", u64::MAX);
        assert!(parse_duration(&huge).unwrap_err().contains("too large"));
        let digits = format!("{}s", "9".repeat(60));
        assert!(parse_duration(&digits).unwrap_err().contains("too large"));
    }

    #[test]
    fn largest_representable_whole_seconds_parse() {
        let max = format!("{}s", u64::MAX);
        assert_eq!(parse_duration(&max), Ok(Duration::from_secs(u64::MAX)));
    }
}
