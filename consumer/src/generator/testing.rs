//! Helpers shared by the generator's unit tests.

use onramp_logic::validate::{parse_event, parse_timestamp};

use super::{GeneratedLine, Generator, GeneratorConfig};

pub(super) fn run(cfg: GeneratorConfig) -> Vec<GeneratedLine> {
    let mut generator = Generator::new(cfg);
    std::iter::from_fn(|| generator.next_line()).collect()
}

pub(super) fn default_run() -> Vec<GeneratedLine> {
    run(GeneratorConfig::default())
}

/// Event time of a well-formed line.
pub(super) fn event_time(text: &str) -> i64 {
    parse_timestamp(&parse_event(text.as_bytes()).unwrap().timestamp).unwrap()
}

pub(super) fn share(part: usize, whole: usize) -> f64 {
    part as f64 / whole as f64
}

pub(super) fn assert_near(what: &str, actual: f64, configured: f64) {
    assert!(
        (configured * 0.5..=configured * 1.5).contains(&actual),
        "{what}: {actual:.4}, configured {configured}"
    );
}
