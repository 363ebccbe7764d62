//! Forward-pass throughput on synthetic batches, printed as one JSON line.
//!
//! `scripts/bench_forward.py` runs this beside the same workload in PyTorch and prints the
//! ratio.
//!
//! ```text
//! cargo run --release --example forward_bench -- --model fixtures/minilm --batch 32 --seq 32
//! ```

use std::time::Instant;

use trojanscan::model::{Batch, LoadOptions, Model, PaddingSide, Precision};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> trojanscan::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(t) = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
    {
        // candle's GEMM and rayon read this once, at first use.
        std::env::set_var("RAYON_NUM_THREADS", t);
    }
    let model_path: String = arg(&args, "--model", "fixtures/minilm".to_string());
    let batch: usize = arg(&args, "--batch", 32);
    let seq: usize = arg(&args, "--seq", 32);
    let iters: usize = arg(&args, "--iters", 5);
    let precision: Precision = arg(&args, "--precision", "f32".to_string()).parse()?;
    let model = Model::load(&model_path, &LoadOptions::with_precision(precision))?;
    // Deterministic pseudo-random ids (an LCG), avoiding the first 1000 (special) ids.
    let vocab = model.info().vocab_size as u64;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (1000 + (state >> 33) % (vocab - 1000)) as u32
                })
                .collect()
        })
        .collect();
    let b = Batch::from_ids(&ids, model.pad_id(), PaddingSide::Right, model.device())?;
    for _ in 0..2 {
        model.forward_with_states(&b)?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        let out = model.forward_with_states(&b)?;
        // Make sure the work is done (lazy devices) before the clock stops.
        let _ = out.hidden_states.last().map(|h| h.dims().to_vec());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    println!(
        "{{\"model\":{:?},\"batch\":{batch},\"seq\":{seq},\"precision\":{:?},\"ms_per_batch\":{:.3},\"tokens_per_s\":{:.1}}}",
        model_path,
        format!("{precision:?}").to_lowercase(),
        median * 1e3,
        (batch * seq) as f64 / median
    );
    Ok(())
}
