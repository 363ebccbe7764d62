#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod device;
pub mod error;
pub mod model;

pub use device::DeviceChoice;
pub use error::{Error, Result};
