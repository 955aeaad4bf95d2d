//! The `fjord` binary: broker launcher and admin CLI (issues #4 and #6).

fn main() {
    eprintln!(
        "fjord {}: the broker and CLI arrive with issues #4 and #6",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
