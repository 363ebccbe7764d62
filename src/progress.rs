//! Progress reporting for long-running work (trigger hunts, scans).
//!
//! Library code never prints: it reports stages and steps to a [`Progress`] sink that the
//! embedder supplies. The CLI draws progress bars; a notebook or a service can log, count or
//! ignore them. Sinks are shared across threads, so they take `&self`.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use trojanscan::progress::Progress;
//!
//! #[derive(Default)]
//! struct Counter(AtomicU64);
//! impl Progress for Counter {
//!     fn advance(&self, n: u64) {
//!         self.0.fetch_add(n, Ordering::Relaxed);
//!     }
//! }
//! let c = Counter::default();
//! c.begin("sweep", Some(10));
//! c.advance(4);
//! assert_eq!(c.0.load(Ordering::Relaxed), 4);
//! ```

/// A sink for progress: stages with an optional number of steps, and steps done.
pub trait Progress: Send + Sync {
    /// A stage starts; `total` is its number of steps when known.
    fn begin(&self, _stage: &str, _total: Option<u64>) {}
    /// `n` more steps of the current stage are done.
    fn advance(&self, _n: u64) {}
    /// A line worth showing (a finding, a skipped step and why).
    fn note(&self, _message: &str) {}
    /// The current stage is over.
    fn finish(&self) {}
}

/// A sink that discards everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
