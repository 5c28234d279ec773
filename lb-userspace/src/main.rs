//! `sluice`: daemon and CLI in one binary.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(lb_userspace::cli::main_with(std::env::args_os()))
}
