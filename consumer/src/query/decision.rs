//! Decisions on the read side: the person's current profile, its audiences and the
//! surface's rules (`GET /v1/profiles/{id}/decision`, `onramp decide`).

use crate::audience::{decide, Decision};
use crate::store::{Store, StoreError};

/// Why no decision was made.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// No profile for the id.
    #[error("no profile for `{0}`")]
    NotFound(String),
    /// The rules have no such surface.
    #[error("no surface `{asked}` in the store's rules; surfaces: {known}")]
    UnknownSurface {
        /// What was asked.
        asked: String,
        /// The surfaces there are.
        known: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decides `surface` for the person of `id` (any of its ids). Conditions are judged on the
/// person's current merged profile at the store's newest watermark; `in_audience` uses the
/// memberships as of the audience frontier (what `/v1/audiences` lists).
pub fn decision(store: &Store, id: &str, surface: &str) -> Result<Decision, DecisionError> {
    let rules = store.rules();
    let Some(s) = rules.surfaces.get(surface) else {
        let known: Vec<&str> = rules.surfaces.keys().map(String::as_str).collect();
        return Err(DecisionError::UnknownSurface {
            asked: surface.to_string(),
            known: if known.is_empty() {
                "(none)".into()
            } else {
                known.join(", ")
            },
        });
    };
    let person = store
        .person(id)?
        .ok_or_else(|| DecisionError::NotFound(id.to_string()))?;
    let now = super::reference_time_ms(store)?.unwrap_or(person.profile.last_seen_ms);
    let audiences = store.memberships(&person.id)?;
    Ok(decide(s, &person.id, &person.profile, audiences, now))
}
