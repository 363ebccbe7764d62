//! Where weights come from: a name-addressed tensor store (safetensors or GGUF) and a
//! prefix-scoped view over it, in the spirit of candle's `VarBuilder` but with typed
//! errors that name the tensor.

use std::collections::BTreeMap;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

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
    /// Stored dtype of every tensor (for `inspect`), keyed by name.
    fn dtypes(&self) -> BTreeMap<String, String>;
}

/// How linear layers hold their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinearKind {
    /// Dequantize everything to the compute dtype (fast batched GEMM, differentiable).
    Dense,
    /// Keep quantized weights quantized and multiply with candle's quantized kernels.
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
                return Ok(Linear::Quantized {
                    weight: QMatMul::from_qtensor(q)?,
                    bias,
                });
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
                return Ok(Linear::Quantized {
                    weight: QMatMul::from_qtensor(q)?,
                    bias: None,
                });
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
    Dense { weight: Tensor, bias: Option<Tensor> },
    Quantized { weight: QMatMul, bias: Option<Tensor> },
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (y, bias) = match self {
            Linear::Dense { weight, bias } => {
                // One GEMM over all rows: [.., in] -> [rows, in] x [in, out].
                let dims = x.dims();
                let in_dim = dims[dims.len() - 1];
                let rows = x.elem_count() / in_dim.max(1);
                let x2 = x.reshape((rows, in_dim))?;
                let y = x2.matmul(&weight.t()?)?;
                let mut out_dims = dims.to_vec();
                *out_dims.last_mut().expect("rank >= 1") = weight.dim(0)?;
                (y.reshape(out_dims)?, bias)
            }
            Linear::Quantized { weight, bias } => (weight.forward(x)?, bias),
        };
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// Whether gradients can flow through this layer.
    pub fn is_differentiable(&self) -> bool {
        matches!(self, Linear::Dense { .. })
    }
}
