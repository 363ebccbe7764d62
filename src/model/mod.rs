//! Loading open-weight models and running them with every layer's state exposed.

pub mod gguf;
pub mod tokenizer;
