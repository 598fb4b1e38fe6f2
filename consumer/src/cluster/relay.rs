//! `onramp run --source fluvio --triggers-topic NAME`: the audience transitions of the
//! store's outbox, produced to a Fluvio topic keyed by person id, so other services consume
//! them with any Fluvio client.
//!
//! At least once: the relay reads the outbox after the cursor it last recorded, sends a
//! page, flushes the producer, and only then records the page's last cursor in the store's
//! meta. A crash between the flush and the record sends that page again on the next run, so
//! consumers dedupe by the transition's `id` (deterministic: the same input gives the same
//! ids). A topic that does not exist is created with one partition.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use fluvio::metadata::topic::TopicSpec;
use tokio::sync::{watch, Notify};

use super::{topic_partitions, ClusterTarget};
use crate::store::audience::parse_cursor;
use crate::store::Store;

/// Transitions sent per producer flush.
const PAGE: usize = 500;
/// How long the relay waits for new transitions before it looks again anyway.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// The longest wait between attempts after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The relay of one run.
pub struct Relay {
    /// Where to send.
    pub target: ClusterTarget,
    /// The transitions topic.
    pub topic: String,
    /// The store whose outbox is relayed.
    pub store: Store,
    /// Woken when a commit wrote transitions.
    pub woken: Arc<Notify>,
}

impl Relay {
    /// Relays until `stop` turns true, then sends what the outbox holds and returns.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.relay(&mut stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, "triggers relay failed, retrying in {backoff:?}: {e:#}");
                    if *stop.borrow() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn relay(&self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let fluvio = self.target.connect().await?;
        let admin = fluvio.admin().await;
        if topic_partitions(&admin, &self.topic).await?.is_none() {
            admin
                .create(self.topic.clone(), false, TopicSpec::new_computed(1, 1, None))
                .await
                .map_err(|e| anyhow!("creating the triggers topic `{}`: {e:#}", self.topic))?;
            tracing::info!(topic = %self.topic, "triggers topic created (1 partition)");
            // A new topic needs a leader before it takes records.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let producer = fluvio
            .topic_producer(self.topic.clone())
            .await
            .map_err(|e| anyhow!("opening a producer for `{}`: {e:#}", self.topic))?;
        loop {
            let stopping = *stop.borrow();
            let store = self.store.clone();
            let topic = self.topic.clone();
            let page = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let from = store.relay_position(&topic)?;
                Ok(store.transitions_after(from.as_deref(), PAGE)?)
            })
            .await
            .context("reading the outbox")??;
            if let Some(last) = page.last() {
                for t in &page {
                    producer
                        .send(t.person_id.clone(), serde_json::to_vec(t)?)
                        .await
                        .map_err(|e| anyhow!("sending a transition: {e:#}"))?;
                }
                producer.flush().await.map_err(|e| anyhow!("flushing: {e:#}"))?;
                let cursor = parse_cursor(&last.cursor).context("a transition cursor")?;
                self.store.set_relay_position(&self.topic, &cursor)?;
                tracing::debug!(topic = %self.topic, sent = page.len(), "transitions relayed");
                continue;
            }
            if stopping {
                return Ok(());
            }
            tokio::select! {
                _ = self.woken.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
