//! Times trojanscan's activation-clustering pipeline (PCA to a few dimensions, then
//! k-means) on a matrix stored as the tensor `x` of a safetensors file, and prints one
//! JSON line. `scripts/bench_clustering.py` runs it beside scikit-learn on the same file.
//! An untimed run on the first 500 rows warms the process up first, as the script warms
//! up scikit-learn.
//!
//! ```sh
//! cargo run --release --example cluster_bench -- --input acts.safetensors --dims 10 --k 2 --seed 0 [--restarts 1] [--device cpu] [--labels OUT]
//! ```
//!
//! `--labels OUT` also writes each row's cluster as little-endian `u32`s, so the script
//! can score every pipeline's partition in one common space.

use std::time::Instant;

use candle_core::DType;
use trojanscan::device::DeviceChoice;
use trojanscan::linalg::{KMeansParams, PcaParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = None;
    let (mut dims, mut k, mut seed, mut restarts) = (10usize, 2usize, 0u64, 1usize);
    let mut device = "cpu".to_string();
    let mut labels_out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--input" => input = Some(val()?),
            "--dims" => dims = val()?.parse()?,
            "--k" => k = val()?.parse()?,
            "--seed" => seed = val()?.parse()?,
            "--restarts" => restarts = val()?.parse()?,
            "--device" => device = val()?,
            "--labels" => labels_out = Some(val()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let input = input.ok_or("--input FILE is required")?;
    let dev = device.parse::<DeviceChoice>()?.open()?;
    let t0 = Instant::now();
    let tensors = candle_core::safetensors::load(&input, &dev)?;
    let x = tensors
        .get("x")
        .ok_or("the file has no tensor `x`")?
        .to_dtype(DType::F32)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let run = |x: &candle_core::Tensor| -> Result<_, trojanscan::Error> {
        // The audit's settings: projections from the fit's last pass, no total variance.
        let (_, z) = PcaParams::new(dims)
            .seed(seed)
            .total_variance(false)
            .check()?
            .fit_transform(x)?;
        KMeansParams::new(k)
            .restarts(restarts)
            .seed(seed)
            .check()?
            .fit(&z)
    };
    // One untimed run on the first 500 rows starts the thread pool and the gemm code,
    // as the script's warm-up does for scikit-learn.
    run(&x.narrow(0, 0, x.dim(0)?.min(500))?)?;
    let t1 = Instant::now();
    let fit = run(&x)?;
    let seconds = t1.elapsed().as_secs_f64();
    if let Some(path) = labels_out {
        let bytes: Vec<u8> = fit.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        std::fs::write(path, bytes)?;
    }
    println!(
        "{{\"seconds\": {seconds:.6}, \"load_seconds\": {load_seconds:.6}, \"inertia\": {:.6}, \"iterations\": {}, \"restarts\": {restarts}, \"sizes\": {:?}, \"rows\": {}, \"cols\": {}}}",
        fit.inertia,
        fit.iterations,
        fit.sizes,
        x.dim(0)?,
        x.dim(1)?
    );
    Ok(())
}
