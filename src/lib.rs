#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![allow(missing_docs)] // lifted once the API settles

pub mod device;
pub mod error;
pub mod model;

pub use device::DeviceChoice;
pub use error::{Error, Result};
