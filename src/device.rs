//! Device choice: CPU by default, CUDA when compiled with the `cuda` feature.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Where tensors live and kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeviceChoice {
    /// The CPU (SIMD gemm, all cores through rayon).
    #[default]
    Cpu,
    /// The CUDA device with this ordinal. Needs the `cuda` feature.
    Cuda(usize),
}

impl DeviceChoice {
    /// Open the device.
    ///
    /// ```
    /// use trojanscan::DeviceChoice;
    /// let dev = DeviceChoice::Cpu.open().unwrap();
    /// assert!(dev.is_cpu());
    /// ```
    ///
    /// Asking for CUDA in a build without the `cuda` feature is an [`Error::Device`] that
    /// says how to get one, never a panic.
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
            DeviceChoice::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<candle_core::Device> {
    candle_core::Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("cannot open CUDA device {ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<candle_core::Device> {
    Err(Error::Device(format!(
        "CUDA device {ordinal} requested, but this trojanscan was built without CUDA support \
         (rebuild with `--features cuda`)"
    )))
}

impl FromStr for DeviceChoice {
    type Err = Error;

    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceChoice::Cuda).map_err(|_| {
                    Error::InvalidArgument(format!("bad CUDA ordinal in device `{s}`"))
                }),
                None => Err(Error::InvalidArgument(format!(
                    "unknown device `{s}` (expected cpu, cuda or cuda:N)"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda:2".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(2)
        );
        assert!(matches!(
            "tpu".parse::<DeviceChoice>(),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_typed_error() {
        let err = DeviceChoice::Cuda(0).open().unwrap_err();
        assert!(matches!(err, Error::Device(ref m) if m.contains("--features cuda")));
    }
}
