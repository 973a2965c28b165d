//! `docs/data-inventory.md` is current: regenerated from the code, it equals the checked-in
//! file. On a difference the test names the first differing lines and the command that
//! regenerates it.

use std::path::Path;

#[tokio::test]
async fn data_inventory_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fresh = pil_local::inventory::render(&root)
        .await
        .unwrap_or_else(|e| panic!("the data inventory cannot be generated:\n{e}"));
    let path = root.join("docs/data-inventory.md");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if fresh == current {
        return;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (current.lines().collect(), fresh.lines().collect());
    let mut diff = Vec::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied(), b.get(i).copied());
        if x != y {
            diff.push(format!(
                "line {}:\n  - {}\n  + {}",
                i + 1,
                x.unwrap_or("(none)"),
                y.unwrap_or("(none)")
            ));
        }
        if diff.len() == 10 {
            break;
        }
    }
    panic!(
        "docs/data-inventory.md is not current; regenerate it with `make data-inventory` \
         (cargo run -q -p pil-bench --bin data-inventory > docs/data-inventory.md).\n{}",
        diff.join("\n")
    );
}

/// The Square relay's inventory (docs/square-relay-data-inventory.md) is current too.
#[test]
fn relay_data_inventory_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fresh = pil_local::inventory::render_relay(&root)
        .unwrap_or_else(|e| panic!("the relay's data inventory cannot be generated:\n{e}"));
    let current = std::fs::read_to_string(root.join("docs/square-relay-data-inventory.md"))
        .unwrap_or_default();
    assert!(
        fresh == current,
        "docs/square-relay-data-inventory.md is stale: run `make relay-inventory`"
    );
}
