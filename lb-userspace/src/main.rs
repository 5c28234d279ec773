//! `sluice`: daemon and CLI in one binary.

use lb_userspace::cli;

fn main() -> std::process::ExitCode {
    let args = cli::parse();
    let format = args.command.log_format();
    lb_userspace::logging::init(format);
    if args.command.is_report() {
        // `sluice backend list | head`: a reader that stops early ends a report command
        // quietly, as it does `ls` or `cat` (SIGPIPE), instead of `println!` panicking on
        // EPIPE. Commands that own kernel state (run, demo, lab, bench) keep ignoring it, so
        // they always clean up.
        use nix::sys::signal::{SigHandler, Signal, signal};
        // SAFETY: called before any other thread exists; SIG_DFL installs no handler (nix's
        // `signal` is unsafe only for handlers, which must be async-signal-safe).
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
    match cli::dispatch(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if format == lb_userspace::logging::LogFormat::Json {
                // `sluice run --log-format json`: the last word is a log line like the others.
                tracing::error!(error = %format!("{e:#}"), "sluice run failed");
            } else {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::from(cli::exit_code(&e))
        }
    }
}
