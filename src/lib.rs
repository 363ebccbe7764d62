#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod audit;
pub mod device;
pub mod error;
pub mod forensics;
pub mod linalg;
pub mod model;
pub mod plant;
pub mod provenance;
pub(crate) mod rng;

pub use device::DeviceChoice;
pub use error::{Error, Result};
