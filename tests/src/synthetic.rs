//! A small deterministic event stream with a chosen number of users, for tests and
//! benchmarks that need exact control over users and time (the product's realistic
//! traffic generator is `onramp::generator`).

use serde_json::json;

/// 2026-11-01T08:00:00Z, ms.
pub const T0: i64 = 1_793_520_000_000;

/// RFC 3339 (UTC, ms) for a time in November 2026.
pub fn ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // 2026-11-01 is day 20_758 since the epoch.
    let day_of_month = days - 20_758 + 1;
    assert!((1..=30).contains(&day_of_month), "ts() covers November 2026 only");
    format!(
        "2026-11-{day_of_month:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// `n` events over `users` users (`u_0` …), spread evenly over `span_ms` of event time
/// from [`T0`], with ~10% up to 5 minutes late and ~4% retried (the same line again).
pub fn stream(n: usize, users: u64, span_ms: i64, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed;
    let mut next = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x >> 33
    };
    let step = (span_ms / n.max(1) as i64).max(1);
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n + n / 20);
    for i in 0..n {
        let user = format!("u_{}", next() % users);
        let late = if next() % 10 == 0 { (next() % 300_000) as i64 } else { 0 };
        let t = (T0 + i as i64 * step - late).max(T0);
        let mut ev = match next() % 8 {
            0 => json!({"type":"sign_up","properties":{"email": format!("{user}@acme.io")}}),
            1 => {
                json!({"type":"step_completed","properties":{"step": (["profile","workspace"][(next() % 2) as usize])}})
            }
            2 => {
                json!({"type":"identify","properties":{"traits":{"plan": (["free","team","pro"][(next() % 3) as usize]), "seats": next() % 50}}})
            }
            3 => json!({"type":"click","properties":{"target":"next"}}),
            4 => json!({"type":"feature_used","properties":{"feature":"export"}}),
            5 => json!({"type":"onboarding_completed"}),
            _ => {
                json!({"type":"page_view","properties":{"path": format!("/p/{}", next() % 5), "url": "https://app.example/?utm_source=ads"},
                        "context":{"user_agent":"Mozilla/5.0 (Windows NT 10.0) Chrome/120.0","locale":"de_de","page":{"referrer":"https://news.example.com/x"}}})
            }
        };
        ev["event_id"] = json!(format!("e{i}"));
        ev["user_id"] = json!(user);
        ev["timestamp"] = json!(ts(t));
        let line = serde_json::to_vec(&ev).expect("JSON");
        if next() % 25 == 0 {
            out.push(line.clone());
        }
        out.push(line);
    }
    out
}
