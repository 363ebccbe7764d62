//! Layer primitives shared by the architectures, each in two forms: candle-nn's fused
//! kernels (fast, but with no backward pass: autograd silently stops at them) and the same
//! maths from primitive tensor ops (differentiable). [`Mode`] picks one per forward pass.

use candle_core::{DType, Result, Tensor, D};

/// How a forward pass is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Fused kernels and (for GGUF) quantized matmuls where loaded: the fast path.
    #[default]
    Fast,
    /// Primitive ops only, so gradients flow from outputs back to input embeddings.
    Differentiable,
}

pub(crate) fn layer_norm(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f64,
    mode: Mode,
) -> Result<Tensor> {
    match mode {
        Mode::Fast if x.is_contiguous() => candle_nn::ops::layer_norm(x, w, b, eps as f32),
        _ => {
            let n = x.dim(D::Minus1)? as f64;
            let mean = (x.sum_keepdim(D::Minus1)? / n)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / n)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)?
                .broadcast_mul(w)?
                .broadcast_add(b)
        }
    }
}

pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Fast if x.is_contiguous() => candle_nn::ops::rms_norm(x, w, eps as f32),
        _ => {
            let n = x.dim(D::Minus1)? as f64;
            let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / n)?;
            x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
        }
    }
}

pub(crate) fn softmax_last(x: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Fast => candle_nn::ops::softmax_last_dim(x),
        Mode::Differentiable => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Rotary embedding in the HF ("rotate half") layout. `cos`/`sin` are `[b, s, d/2]`.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, mode: Mode) -> Result<Tensor> {
    match mode {
        Mode::Fast => candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin),
        Mode::Differentiable => {
            let half = x.dim(D::Minus1)? / 2;
            let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
            let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
            let x1 = x.narrow(D::Minus1, 0, half)?;
            let x2 = x.narrow(D::Minus1, half, half)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
        }
    }
}

/// Additive attention bias `[b, 1, s, s]`: 0 where a query may attend to a key, a large
/// negative number where the key is padding (or, if `causal`, in the future).
///
/// A finite value rather than -inf keeps fully masked rows (padding queries) finite.
pub(crate) fn attention_bias(
    mask: &Tensor,
    causal: bool,
    sliding_window: Option<usize>,
    dtype: DType,
) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let device = mask.device();
    let keys = mask.to_dtype(DType::F32)?.reshape((b, 1, 1, s))?;
    let mut allowed = keys.broadcast_as((b, 1, s, s))?.contiguous()?;
    if causal || sliding_window.is_some() {
        let q = Tensor::arange(0u32, s as u32, device)?.reshape((s, 1))?;
        let k = Tensor::arange(0u32, s as u32, device)?.reshape((1, s))?;
        let mut ok = if causal {
            k.broadcast_le(&q)?
        } else {
            Tensor::ones((s, s), DType::U8, device)?
        };
        if let Some(w) = sliding_window {
            // key > query - window  <=>  key + window > query
            let near =
                (k.to_dtype(DType::F32)? + w as f64)?.broadcast_gt(&q.to_dtype(DType::F32)?)?;
            ok = (ok.to_dtype(DType::F32)? * near.to_dtype(DType::F32)?)?.to_dtype(DType::U8)?;
        }
        let ok = ok.to_dtype(DType::F32)?.reshape((1, 1, s, s))?;
        allowed = allowed.broadcast_mul(&ok)?;
    }
    // allowed ∈ {0,1} -> bias ∈ {-1e9, 0}
    ((allowed - 1.0)? * 1e9)?.to_dtype(dtype)
}

/// `cos`/`sin` tables `[b, s, d/2]` for the given integer positions `[b, s]`.
pub(crate) fn rope_tables(
    positions: &Tensor,
    inv_freq: &Tensor,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let (b, s) = positions.dims2()?;
    let half = inv_freq.dim(0)?;
    let pos = positions.to_dtype(DType::F32)?.reshape((b, s, 1))?;
    let freqs = pos.broadcast_mul(&inv_freq.reshape((1, 1, half))?)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}

/// Positions of real tokens: 0,1,2,... along each row, counting only unmasked tokens, so a
/// left-padded row gets the same positions as the unpadded text.
pub(crate) fn positions_from_mask(mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?;
    let pos = (m.cumsum(1)? - 1.0)?.relu()?;
    pos.to_dtype(DType::U32)
}
