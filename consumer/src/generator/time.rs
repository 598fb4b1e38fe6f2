//! Event time: the millisecond units the generator plans gaps and windows in, and the
//! RFC 3339 text of an event's `timestamp`.

use chrono::{DateTime, Datelike, Timelike};

pub(super) const SECOND_MS: i64 = 1_000;
pub(super) const MINUTE_MS: i64 = 60 * SECOND_MS;
pub(super) const HOUR_MS: i64 = 60 * MINUTE_MS;

/// 400 Gregorian years (146,097 days) in ms: the calendar repeats itself after them.
const GREGORIAN_CYCLE_MS: i64 = 146_097 * 24 * HOUR_MS;

/// `ms` since the epoch as RFC 3339 UTC with milliseconds: `2026-11-02T09:15:03.250Z`.
///
/// chrono does the calendar, but its dates stop about 262,000 years either side of year 0,
/// while every `i64` needs a text (a config may start the stream anywhere, and event times
/// saturate at `i64::MAX`). So one step stays hand-written: the Gregorian calendar repeats
/// every 400 years, so chrono reads the date and time at the same place in the first 400
/// years after the epoch, and the whole cycles are added back to the year. The fields are
/// printed here, not with chrono's `%Y`, which puts a `+` before years past 9999: the year
/// is zero-padded to four characters, sign included, and never signed `+`.
pub fn format_timestamp(ms: i64) -> String {
    let cycles = ms.div_euclid(GREGORIAN_CYCLE_MS);
    let t = DateTime::from_timestamp_millis(ms.rem_euclid(GREGORIAN_CYCLE_MS))
        .expect("the 400 years after the epoch are in chrono's range");
    let year = i64::from(t.year()) + 400 * cycles;
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use onramp_logic::validate::parse_timestamp;

    use super::*;
    use crate::generator::DEFAULT_START_MS;

    /// Timestamps are RFC 3339 UTC with milliseconds and parse back to the same instant.
    #[test]
    fn timestamps_round_trip() {
        assert_eq!(format_timestamp(DEFAULT_START_MS), "2026-11-02T00:00:00.000Z");
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(951_782_400_000 + 3_723_250),
            "2000-02-29T01:02:03.250Z"
        );
        // 2000-01-01 to 2099 in steps of a prime number of ms (~3.3 days).
        let mut ms = 946_684_800_000;
        while ms < 4_102_444_800_000 {
            assert_eq!(
                parse_timestamp(&format_timestamp(ms)).unwrap(),
                ms,
                "{}",
                format_timestamp(ms)
            );
            ms += 287_999_957;
        }
    }

    /// Instants before the epoch, past year 9999 and beyond chrono's range have the text
    /// they always had: every `i64` is formatted, the year zero-padded without a `+`.
    #[test]
    fn far_timestamps_keep_their_text() {
        for (ms, text) in [
            (i64::MIN, "-292275055-05-16T16:47:04.192Z"),
            (-62_167_219_200_001, "-001-12-31T23:59:59.999Z"),
            (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (253_402_300_800_000, "10000-01-01T00:00:00.000Z"),
            (8_210_266_876_800_000, "262143-01-01T00:00:00.000Z"),
            (i64::MAX, "292278994-08-17T07:12:55.807Z"),
        ] {
            assert_eq!(format_timestamp(ms), text, "{ms}");
        }
    }
}
