//! The `deadbeat` daemon.

fn main() {
    eprintln!(
        "deadbeat {}: the TOML-configured daemon is not built yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
