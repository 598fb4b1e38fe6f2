//! Parsing of SmartModule params (`-e key=value` in `smdk test`, `with:` in a transforms
//! file): durations, sizes and lists, each with an error that names the param, says what
//! was found and what was expected.

use std::fmt;

/// A param that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The param's name.
    pub param: &'static str,
    /// The value given.
    pub value: String,
    /// What a valid value looks like.
    pub expected: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value for param `{}`: `{}`; expected {}",
            self.param, self.value, self.expected
        )
    }
}

impl std::error::Error for ParamError {}

/// Parses a duration: a whole number followed by `ms`, `s`, `m`, `h` or `d`
/// (`500ms`, `45s`, `30m`, `6h`, `7d`); `0` alone means zero.
pub fn parse_duration_ms(param: &'static str, value: &str) -> Result<i64, ParamError> {
    let err = || ParamError {
        param,
        value: value.to_string(),
        expected: "a duration such as 500ms, 45s, 30m, 6h or 7d".to_string(),
    };
    let v = value.trim();
    if v == "0" {
        return Ok(0);
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = v.split_at(split);
    let n: i64 = num.parse().map_err(|_| err())?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(err()),
    };
    n.checked_mul(scale).ok_or_else(err)
}

/// Parses a whole number within `min..=max`.
pub fn parse_bounded(param: &'static str, value: &str, min: u64, max: u64) -> Result<u64, ParamError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ParamError {
            param,
            value: value.to_string(),
            expected: format!("a whole number from {min} to {max}"),
        })
}

/// Parses a comma-separated list; blanks around items are dropped, empty items skipped.
pub fn parse_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Proves every duration unit parses to the right number of milliseconds.
    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("p", "500ms"), Ok(500));
        assert_eq!(parse_duration_ms("p", "45s"), Ok(45_000));
        assert_eq!(parse_duration_ms("p", "30m"), Ok(1_800_000));
        assert_eq!(parse_duration_ms("p", "6h"), Ok(21_600_000));
        assert_eq!(parse_duration_ms("p", "7d"), Ok(604_800_000));
        assert_eq!(parse_duration_ms("p", "0"), Ok(0));
    }

    /// Proves malformed durations are refused with an error naming the param.
    #[test]
    fn bad_durations_name_the_param() {
        for bad in ["", "30", "m", "-5m", "5 weeks", "99999999999999999999d"] {
            let e = parse_duration_ms("session_timeout", bad).unwrap_err();
            assert_eq!(e.param, "session_timeout");
            assert!(e.to_string().contains("`session_timeout`"), "{e}");
        }
    }

    /// Proves bounded numbers refuse values out of range and lists drop blanks.
    #[test]
    fn bounded_numbers_and_lists() {
        assert_eq!(parse_bounded("n", "10", 1, 20), Ok(10));
        assert!(parse_bounded("n", "21", 1, 20).is_err());
        assert!(parse_bounded("n", "x", 1, 20).is_err());
        assert_eq!(parse_list(" a, b,,c "), vec!["a", "b", "c"]);
    }
}
