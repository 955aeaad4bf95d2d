//! The `fjord` binary: broker launcher and admin CLI (issues #4 and #6).

fn main() -> std::process::ExitCode {
    fjord_cli::main()
}
