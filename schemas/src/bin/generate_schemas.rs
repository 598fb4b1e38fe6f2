//! Writes the JSON Schema files (draft 2020-12) generated from the Rust types into
//! `schemas/json/`. Run: `cargo run -p onramp-schemas --features schema --bin generate-schemas`.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    std::fs::create_dir_all(&dir)?;
    for (name, schema) in onramp_schemas::json_schemas() {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&schema).expect("a schema is JSON") + "\n";
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
