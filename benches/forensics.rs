//! Weight-forensics time (criterion): SmolLM2-135M (GGUF Q4_1) and MiniLM (safetensors)
//! against themselves: every tensor loaded (dequantized) twice and compared, token rows
//! measured. Real models come from `scripts/fetch_models.sh` and are skipped when absent.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use trojanscan::forensics::DiffOptions;

fn bench_diff(c: &mut Criterion) {
    let params = DiffOptions::default().check().unwrap();
    let mut group = c.benchmark_group("diff");
    group.sample_size(10);
    let smol = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if smol.exists() {
        group.bench_function("smollm2-135m-q4_1 vs itself", |b| {
            b.iter(|| params.diff(&smol, &smol).unwrap())
        });
    } else {
        eprintln!(
            "skipping SmolLM2: {} not fetched (run scripts/fetch_models.sh)",
            smol.display()
        );
    }
    let minilm = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/minilm");
    if minilm.exists() {
        group.bench_function("minilm vs itself", |b| {
            b.iter(|| params.diff(&minilm, &minilm).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_diff);
criterion_main!(benches);
