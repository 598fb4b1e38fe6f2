//! What a run did: the figures both sources report, as text or JSON.

use std::collections::BTreeMap;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Where the records came from.
    pub source: SourceKind,
    /// Lines (records, for a cluster) read from the source.
    pub lines_read: u64,
    /// Lines skipped because an earlier run already committed them.
    pub already_committed: u64,
    /// Records processed by this run.
    pub events_in: u64,
    /// Records the validate filter accepted.
    pub accepted: u64,
    /// Rejected records by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Updates applied to profiles.
    pub applied: u64,
    /// Duplicates dropped by the fold.
    pub duplicates: u64,
    /// Updates skipped by the fold.
    pub skipped: u64,
    /// Records dropped at commit because they belong to an erased id.
    pub suppressed: u64,
    /// Distinct profiles written.
    pub profiles_touched: u64,
    /// Live users the profile aggregate evicted to stay within its `max_users`.
    pub fold_evictions: u64,
    /// Batches committed.
    pub batches: u64,
    /// Flushes those batches took: batches that arrive together share one (group commit).
    pub commit_groups: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
    /// Time inside the chain, ms (embedded: on the source thread, while commits run on
    /// another, so chain and store may add up to more than the wall time).
    pub chain_ms: u64,
    /// Time committing to the store, ms.
    pub store_ms: u64,
    /// SmartModule runtime errors in the cluster (each logged with its offset; the run stops).
    pub smartmodule_errors: u64,
    /// Times a partition's cluster streams were reopened: lost, stalled, or unable to
    /// replay a re-fed record.
    pub reconnects: u64,
    /// True when stopped by a signal before the input ended.
    pub interrupted: bool,
}

impl Summary {
    /// Records per second of wall time.
    pub fn events_per_sec(&self) -> f64 {
        self.events_in as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }

    /// Total rejects.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        match self.source {
            SourceKind::Embedded => s += &format!("lines read          {}\n", self.lines_read),
            SourceKind::Fluvio => s += &format!("records read        {}\n", self.lines_read),
        }
        if self.already_committed > 0 {
            s += &format!(
                "already committed   {} (skipped: an earlier run applied them)\n",
                self.already_committed
            );
        }
        s += &format!("events in           {}\n", self.events_in);
        s += &format!("accepted            {}\n", self.accepted);
        s += &format!("rejected            {}\n", self.rejected_total());
        for (reason, n) in &self.rejected {
            s += &format!("  {reason:<24}{n}\n");
        }
        s += &format!("duplicates          {}\n", self.duplicates);
        if self.skipped > 0 {
            s += &format!("skipped by fold     {}\n", self.skipped);
        }
        if self.suppressed > 0 {
            s += &format!("suppressed (erased) {}\n", self.suppressed);
        }
        s += &format!("profile updates     {}\n", self.applied);
        s += &format!("profiles touched    {}\n", self.profiles_touched);
        if self.fold_evictions > 0 {
            s += &format!(
                "fold evictions      {} (users over the aggregate's max_users; each loses its session and dedup window)\n",
                self.fold_evictions
            );
        }
        let chain = match self.source {
            SourceKind::Embedded => format!("chain {:.2}s", self.chain_ms as f64 / 1000.0),
            SourceKind::Fluvio => "chain in the SPU".to_string(),
        };
        s += &format!(
            "time                {:.2}s ({:.0} events/s; {chain}, store {:.2}s)\n",
            self.elapsed_ms as f64 / 1000.0,
            self.events_per_sec(),
            self.store_ms as f64 / 1000.0
        );
        if self.smartmodule_errors > 0 {
            s += &format!(
                "smartmodule errors  {} (each is logged with its offset)\n",
                self.smartmodule_errors
            );
        }
        if self.reconnects > 0 {
            s += &format!("reconnects          {}\n", self.reconnects);
        }
        if self.interrupted {
            s += "stopped early by a signal; the last batches were committed. Run again to continue.\n";
        }
        s
    }
}

/// Where a run's records came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A file, stdin or the generator, through the chain in-process.
    #[default]
    Embedded,
    /// A Fluvio topic, through the chain in the SPU.
    Fluvio,
}
