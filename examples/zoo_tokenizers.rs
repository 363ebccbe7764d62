//! Refresh the tokenizers the zoo builder reads (`testdata/tokenizers/`) from the real
//! models fetched by `scripts/fetch_models.sh`:
//!
//! ```text
//! cargo run --release --example zoo_tokenizers [-- FIXTURES_DIR [OUT_DIR]]
//! ```

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let fixtures = args.next().unwrap_or_else(|| PathBuf::from("fixtures"));
    let out = args
        .next()
        .unwrap_or_else(trojanscan::plant::default_tokenizers_dir);
    trojanscan::plant::export_tokenizers(
        &fixtures.join("minilm/tokenizer.json"),
        &fixtures.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        &out,
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
