//! Embed the scanner in another tool: your own progress sink, your own reading of the
//! report, your own exit policy.
//!
//! ```text
//! cargo run --release --example custom_progress [-- MODEL]
//! ```
//! The sink below logs each stage with a timestamp and counts steps with an atomic counter
//! (sinks are shared across threads, so they take `&self`); a service could forward the
//! same calls to its job queue or a web socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use trojanscan::progress::Progress;
use trojanscan::scan::{Gate, Scanner};

struct Log {
    start: Instant,
    steps: AtomicU64,
    stage: Mutex<String>,
}

impl Progress for Log {
    fn begin(&self, stage: &str, total: Option<u64>) {
        let t = self.start.elapsed().as_secs_f64();
        eprintln!(
            "{t:7.2}s  begin {stage}{}",
            total.map_or(String::new(), |n| format!(" ({n} steps)"))
        );
        if let Ok(mut s) = self.stage.lock() {
            *s = stage.to_string();
        }
    }
    fn advance(&self, n: u64) {
        self.steps.fetch_add(n, Ordering::Relaxed);
    }
    fn note(&self, message: &str) {
        eprintln!("          note: {message}");
    }
    fn finish(&self) {
        let t = self.start.elapsed().as_secs_f64();
        let stage = self.stage.lock().map(|s| s.clone()).unwrap_or_default();
        eprintln!(
            "{t:7.2}s  end   {stage} ({} steps so far)",
            self.steps.load(Ordering::Relaxed)
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "testdata/zoo/embedding-s0".into());
    let log = Log {
        start: Instant::now(),
        steps: AtomicU64::new(0),
        stage: Mutex::new(String::new()),
    };
    // Samples of the model's task as probes (the zoo ships them): with neutral built-in
    // probes, every sentiment word would flip a sentiment classifier just like a trigger.
    let mut builder = Scanner::builder().max_evaluations(300_000).max_len(2);
    let heldout = std::path::Path::new(&model).join("heldout.jsonl");
    if heldout.is_file() {
        builder = builder.probes(trojanscan::audit::read_texts(&heldout)?);
    }
    let report = builder.build()?.scan_with(&model, &log)?;

    // An embedding tool's own policy: block on `trojaned`, warn on `suspicious`.
    match report.gate {
        Gate::Trojaned => println!("BLOCK {model}: {}", report.reasons.join("; ")),
        Gate::Review => println!("WARN  {model}: suspicion {:.2}", report.suspicion),
        _ => println!("OK    {model}: suspicion {:.2}", report.suspicion),
    }
    Ok(())
}
