//! Prints `docs/data-inventory.md`: every stored attribute, message field and log field,
//! derived from the code (see `pil_local::inventory`). Exits non-zero, naming them, when an
//! attribute or field has no description.
//!
//! `cargo run -q -p pil-bench --bin data-inventory > docs/data-inventory.md` (`make data-inventory`);
//! with `--relay`, the Square relay's (`make relay-inventory`, docs/square-relay-data-inventory.md).

use std::path::Path;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = if std::env::args().any(|a| a == "--relay") {
        pil_local::inventory::render_relay(&root)
    } else {
        pil_local::inventory::render(&root).await
    };
    match out {
        Ok(md) => print!("{md}"),
        Err(e) => {
            eprintln!("data-inventory: {e}");
            std::process::exit(1);
        }
    }
}
