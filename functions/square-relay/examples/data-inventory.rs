//! Prints the relay's data inventory (`make relay-inventory` writes it to
//! docs/square-relay-data-inventory.md).

#[allow(clippy::print_stdout)]
fn main() {
    print!("{}", square_relay::store::inventory_markdown());
}
