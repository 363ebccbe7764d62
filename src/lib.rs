#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod audit;
pub mod confirm;
pub mod device;
pub mod error;
pub mod forensics;
pub mod hunt;
pub mod linalg;
pub mod model;
pub mod output;
pub mod plant;
pub mod progress;
pub mod provenance;
pub(crate) mod rng;
pub mod scan;
pub mod verdict;

pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use verdict::Verdict;
