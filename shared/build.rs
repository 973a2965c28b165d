//! Builds the owner pages' stylesheet at compile time: the vendored fonts inlined as `data:`
//! URIs (the pages' CSP allows nothing to be fetched) ahead of `templates/page.css`, and the
//! SHA-256 the CSP allows it by. `approval::page_css` and `approval::page_style_csp_source`
//! include both, so no handler base64-encodes ~90 KB of fonts or hashes ~125 KB in its
//! Lambda init (docs/performance.md).

use std::path::Path;

use base64::Engine as _;
use sha2::Digest as _;

/// The pages' fonts (vendored from `@fontsource/newsreader` and `@fontsource/jetbrains-mono`,
/// OFL, latin subsets; see `assets/fonts/`).
const FONTS: [(&str, u16, &str); 4] = [
    ("Newsreader", 400, "newsreader-latin-400-normal.woff2"),
    ("Newsreader", 600, "newsreader-latin-600-normal.woff2"),
    (
        "JetBrains Mono",
        400,
        "jetbrains-mono-latin-400-normal.woff2",
    ),
    (
        "JetBrains Mono",
        600,
        "jetbrains-mono-latin-600-normal.woff2",
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut css = String::new();
    for (family, weight, file) in FONTS {
        let path = dir.join("assets/fonts").join(file);
        println!("cargo::rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path)?;
        css.push_str(&format!(
            "@font-face{{font-family:\"{family}\";font-style:normal;font-weight:{weight};font-display:swap;src:url(data:font/woff2;base64,{}) format(\"woff2\")}}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ));
    }
    let sheet = dir.join("templates/page.css");
    println!("cargo::rerun-if-changed={}", sheet.display());
    css.push_str(&std::fs::read_to_string(sheet)?);
    let digest = sha2::Sha256::digest(css.as_bytes());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("page.css"), &css)?;
    std::fs::write(
        out.join("page.css.sha256"),
        base64::engine::general_purpose::STANDARD.encode(digest),
    )?;
    Ok(())
}
