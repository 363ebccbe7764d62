//! Hashing throughput (criterion): one large file and many small ones, on one thread and
//! on every core. `scripts/bench_hashing.sh` compares the same shapes with `sha256sum` in
//! one run.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use trojanscan::provenance::sha256_files;

fn write_files(dir: &std::path::Path, n: usize, size: usize) -> Vec<PathBuf> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let p = dir.join(format!("f{i:04}.bin"));
            std::fs::write(&p, data).unwrap();
            p
        })
        .collect()
}

fn bench_hashing(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("sha256_files");
    group.sample_size(10);
    for (name, n, size) in [
        ("1x256MiB", 1usize, 256usize << 20),
        ("256x1MiB", 256, 1 << 20),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let files = write_files(&dir, n, size);
        group.throughput(Throughput::Bytes((n * size) as u64));
        for threads in [Some(1), None] {
            let label = threads.map_or("all-cores".to_string(), |t| format!("{t}-thread"));
            group.bench_with_input(BenchmarkId::new(name, label), &files, |b, files| {
                b.iter(|| sha256_files(files, threads).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_hashing);
criterion_main!(benches);
