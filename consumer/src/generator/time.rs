//! Event time: the millisecond units the generator plans gaps and windows in, and the
//! RFC 3339 text of an event's `timestamp`.

pub(super) const SECOND_MS: i64 = 1_000;
pub(super) const MINUTE_MS: i64 = 60 * SECOND_MS;
pub(super) const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// `ms` since the epoch as RFC 3339 UTC with milliseconds: `2026-11-02T09:15:03.250Z`.
pub fn format_timestamp(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / HOUR_MS,
        rem / MINUTE_MS % 60,
        rem / SECOND_MS % 60,
        rem % SECOND_MS
    )
}

/// The proleptic Gregorian (year, month, day) of a day number (days since 1970-01-01);
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
