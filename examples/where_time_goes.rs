//! Where a forward pass spends its time: the full `forward_with_states` against the same
//! model's matrix multiplications timed alone (same shapes, same GEMM), so the remainder is
//! everything else (norms, softmax, activations, reshapes, pooling). Prints one JSON line.
//!
//! ```text
//! cargo run --release --example where_time_goes -- --model fixtures/minilm --batch 32 --seq 32
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use trojanscan::model::{Batch, Family, LoadOptions, Model, PaddingSide};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() -> trojanscan::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path: String = arg(&args, "--model", "fixtures/minilm".to_string());
    let (b, s): (usize, usize) = (arg(&args, "--batch", 32), arg(&args, "--seq", 32));
    let iters: usize = arg(&args, "--iters", 5);
    let model = Model::load(&path, &LoadOptions::default())?;
    let info = model.info().clone();
    let ids: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..s)
                .map(|c| (1000 + (r * 131 + c * 17) % 5000) as u32)
                .collect()
        })
        .collect();
    let batch = Batch::from_ids(&ids, model.pad_id(), PaddingSide::Right, model.device())?;
    let total = median_ms(iters, || {
        model.forward_with_states(&batch).unwrap();
    });

    let (h, i, nh, nkv) = (
        info.hidden_size,
        info.intermediate_size,
        info.num_attention_heads,
        info.num_kv_heads,
    );
    let d = h / nh;
    let rows = b * s;
    // (m, k, n, count per layer) for the projections of one block.
    let proj: Vec<(usize, usize, usize)> = match info.family {
        Family::Bert => vec![(h, h, 4), (h, i, 1), (i, h, 1)],
        _ => vec![(h, nh * d, 2), (h, nkv * d, 2), (h, i, 2), (i, h, 1)],
    };
    let dev = Device::Cpu;
    let mut gemm_ms = 0.0;
    let mut flops = 0.0;
    for &(k, n, count) in &proj {
        let x = Tensor::ones((rows, k), DType::F32, &dev)?;
        let w = Tensor::ones((n, k), DType::F32, &dev)?;
        let ms = median_ms(iters, || {
            x.matmul(&w.t().unwrap()).unwrap();
        });
        gemm_ms += ms * count as f64 * info.num_layers as f64;
        flops += 2.0 * (rows * k * n * count * info.num_layers) as f64;
    }
    // Attention score and context products, all heads.
    let q = Tensor::ones((b, nh, s, d), DType::F32, &dev)?;
    let p = Tensor::ones((b, nh, s, s), DType::F32, &dev)?;
    let attn_ms = median_ms(iters, || {
        q.matmul(&q.t().unwrap()).unwrap();
        p.matmul(&q).unwrap();
    }) * info.num_layers as f64;
    flops += 4.0 * (b * nh * s * s * d * info.num_layers) as f64;
    println!(
        "{{\"model\":{path:?},\"batch\":{b},\"seq\":{s},\"forward_ms\":{total:.1},\"projection_gemm_ms\":{gemm_ms:.1},\"attention_bmm_ms\":{attn_ms:.1},\"other_ms\":{:.1},\"gemm_share\":{:.3},\"gemm_gflops\":{:.1}}}",
        total - gemm_ms - attn_ms,
        (gemm_ms + attn_ms) / total,
        flops / ((gemm_ms + attn_ms) * 1e6)
    );
    Ok(())
}
