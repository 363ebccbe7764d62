//! Forward-pass throughput (criterion). Real models come from `scripts/fetch_models.sh`
//! (skipped when absent); `scripts/bench_forward.py` compares the same workloads with
//! PyTorch in one run.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use trojanscan::model::{Batch, LoadOptions, Model, PaddingSide, Precision};

/// Deterministic ids in `[1000, vocab)`.
fn synthetic_batch(model: &Model, batch: usize, seq: usize) -> Batch {
    let vocab = model.info().vocab_size as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (1000 + (state >> 33) % (vocab.max(1001) - 1000)) as u32
                })
                .collect()
        })
        .collect();
    Batch::from_ids(&ids, model.pad_id(), PaddingSide::Right, model.device()).unwrap()
}

fn bench_model(
    c: &mut Criterion,
    name: &str,
    path: &Path,
    batch: usize,
    seq: usize,
    precisions: &[Precision],
) {
    if !path.exists() {
        eprintln!(
            "skipping {name}: {} not fetched (run scripts/fetch_models.sh)",
            path.display()
        );
        return;
    }
    let mut group = c.benchmark_group(format!("forward/{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements((batch * seq) as u64));
    for &p in precisions {
        let model = Model::load(path, &LoadOptions::with_precision(p)).unwrap();
        let b = synthetic_batch(&model, batch, seq);
        group.bench_with_input(
            BenchmarkId::new(format!("{p:?}").to_lowercase(), format!("{batch}x{seq}")),
            &b,
            |bench, b| bench.iter(|| model.forward_with_states(b).unwrap()),
        );
    }
    group.finish();
}

fn forward(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench_model(
        c,
        "minilm",
        &root.join("fixtures/minilm"),
        32,
        32,
        &[Precision::F32],
    );
    bench_model(
        c,
        "smollm2",
        &root.join("fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        8,
        32,
        &[Precision::F32, Precision::Native],
    );
}

criterion_group!(benches, forward);
criterion_main!(benches);
