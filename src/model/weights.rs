//! Where weights come from: a name-addressed tensor store (safetensors or GGUF) and a
//! prefix-scoped view over it, in the spirit of candle's `VarBuilder` but with typed
//! errors that name the tensor.

use std::collections::BTreeMap;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// A source of named tensors. Implementations validate their files up front; `load`
/// reads one tensor at a time so peak memory is the model plus one tensor.
pub(crate) trait TensorStore: Send + Sync {
    /// Row-major shape of a stored tensor, if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Load a tensor converted (or dequantized) to `dtype` on `device`.
    fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor>;
    /// Load a tensor in its stored quantized form, if it is quantized.
    fn load_quantized(&self, _name: &str, _device: &Device) -> Result<Option<QTensor>> {
        Ok(None)
    }
    /// Stored dtype and row-major shape of every tensor (for `inspect`), keyed by the name
    /// in the file.
    fn inventory(&self) -> BTreeMap<String, (String, Vec<usize>)>;
}

/// How linear layers hold their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinearKind {
    /// Dequantize everything to the compute dtype (fast batched GEMM, differentiable).
    Dense,
    /// Reproduce the quantized kernels' numerics: weights as stored (dequantized exactly),
    /// activations rounded through the quantized dot product's activation format.
    Quantized,
}

/// A prefix-scoped view of a [`TensorStore`], like candle's `VarBuilder::pp`.
#[derive(Clone)]
pub(crate) struct Weights<'a> {
    store: &'a dyn TensorStore,
    prefix: String,
    pub dtype: DType,
    pub device: &'a Device,
    pub linear_kind: LinearKind,
}

impl<'a> Weights<'a> {
    pub fn new(
        store: &'a dyn TensorStore,
        dtype: DType,
        device: &'a Device,
        linear_kind: LinearKind,
    ) -> Self {
        Self {
            store,
            prefix: String::new(),
            dtype,
            device,
            linear_kind,
        }
    }

    /// A view whose names are prefixed by `s.`.
    pub fn pp(&self, s: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}.{s}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the store holds `name` under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.store.shape(&self.path(name)).is_some()
    }

    /// Load `name`, checking its shape against what the config implies.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let path = self.path(name);
        self.check_shape(&path, shape)?;
        self.store.load(&path, self.dtype, self.device)
    }

    fn check_shape(&self, path: &str, shape: &[usize]) -> Result<()> {
        let found = self
            .store
            .shape(path)
            .ok_or_else(|| Error::MissingTensor { name: path.into() })?;
        if found != shape {
            return Err(Error::ShapeMismatch {
                name: path.into(),
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(())
    }

    /// A linear layer `prefix.weight` ([out, in]) with an optional `prefix.bias` ([out]).
    pub fn linear(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let bias = if bias {
            Some(self.get(&[out_dim], "bias")?)
        } else {
            None
        };
        let wpath = self.path("weight");
        self.check_shape(&wpath, &[out_dim, in_dim])?;
        if self.linear_kind == LinearKind::Quantized {
            if let Some(q) = self.store.load_quantized(&wpath, self.device)? {
                return Linear::quantized(&q, bias);
            }
        }
        Ok(Linear::Dense {
            weight: self.store.load(&wpath, self.dtype, self.device)?,
            bias,
        })
    }

    /// A linear layer whose weight is an existing tensor (tied embeddings).
    pub fn tied_linear(&self, name: &str, weight: &Tensor) -> Result<Linear> {
        if self.linear_kind == LinearKind::Quantized {
            if let Some(q) = self.store.load_quantized(&self.path(name), self.device)? {
                return Linear::quantized(&q, None);
            }
        }
        Ok(Linear::Dense {
            weight: weight.clone(),
            bias: None,
        })
    }
}

/// A linear layer `y = x Wᵀ + b` over the last dimension.
#[derive(Debug, Clone)]
pub(crate) enum Linear {
    Dense {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// A quantized weight, computed as ggml's CPU kernels do, but as one f32 GEMM.
    ///
    /// ggml multiplies a quantized row by activations quantized to the weight type's
    /// "vec-dot" format (Q8_0, Q8_1 or Q8_K) and sums integer products per block. That sum
    /// equals the f32 dot product of the exactly-dequantized weight with the
    /// exactly-dequantized activations, so we round the activations through that format and
    /// use a batched GEMM: the quantized kernels' numbers (to f32 rounding of the sums, see
    /// the `quantized_emulation_matches_qmatmul` test) at dense speed. candle's own quantized
    /// matmul is a row-by-row dot product, ~20x slower for batches.
    Quantized {
        weight: Tensor,
        act_dtype: GgmlDType,
        bias: Option<Tensor>,
    },
}

/// The activation format ggml's CPU dot product pairs with each weight type.
pub(crate) fn vec_dot_dtype(w: GgmlDType) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match w {
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 | Q8_1 => Q8_1,
        Q2K | Q3K | Q4K | Q5K | Q6K | Q8K => Q8K,
        _ => return None,
    })
}

impl Linear {
    fn quantized(q: &QTensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = q.dequantize(&q.device())?;
        Ok(match vec_dot_dtype(q.dtype()) {
            Some(act_dtype) => Linear::Quantized {
                weight,
                act_dtype,
                bias,
            },
            None => Linear::Dense { weight, bias },
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (weight, act, bias) = match self {
            Linear::Dense { weight, bias } => (weight, None, bias),
            Linear::Quantized {
                weight,
                act_dtype,
                bias,
            } => (weight, Some(*act_dtype), bias),
        };
        // One GEMM over all rows: [.., in] -> [rows, in] x [in, out].
        let dims = x.dims();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let mut x2 = x.reshape((rows, in_dim))?;
        if let Some(act) = act {
            let dev = x2.device().clone();
            x2 = QTensor::quantize(&x2.to_dtype(DType::F32)?, act)?.dequantize(&dev)?;
        }
        let y = x2.matmul(&weight.t()?)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = weight.dim(0)?;
        let y = y.reshape(out_dims)?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Whether gradients can flow through this layer (activation rounding has none).
    pub fn is_differentiable(&self) -> bool {
        matches!(self, Linear::Dense { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    /// Our GEMM emulation of a quantized matmul against candle's quantized kernel.
    #[test]
    fn quantized_emulation_matches_qmatmul() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (96, 256), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (7, 256), &dev).unwrap();
        // Q8_0 is left out: candle 0.11 sends it through a repacked x86 kernel whose results
        // differ from ggml's reference dot product (by ~7e-3 here); we follow ggml.
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&w, dt).unwrap();
            let want = QMatMul::from_qtensor(QTensor::quantize(&w, dt).unwrap())
                .unwrap()
                .forward(&x)
                .unwrap();
            let got = Linear::quantized(&q, None).unwrap().forward(&x).unwrap();
            let scale = want
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let err = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // Q4_1 differs by the f16 rounding of the activation block sums (~4e-4).
            assert!(err / scale < 1e-3, "{dt:?}: rel err {}", err / scale);
        }
    }
}
