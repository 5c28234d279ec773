//! The `sluice` command line in a child process: the test binary re-executed so that it
//! runs only its `sluice_as_child` test, which runs the arguments it finds in [`ARGV`]
//! through `main`'s own code (`lb_userspace::cli::main_with`). Tests need no other binary
//! built, and what they see (exit status, stdout, stderr, the daemon's log) is the real
//! thing.
//!
//! Every test binary that uses it declares
//! `#[test] fn sluice_as_child() { sluice_tests::child::run_if_child() }`.

use std::process::Command;

/// The environment variable carrying the child's command line, one argument a line.
pub const ARGV: &str = "SLUICE_TEST_ARGV";

/// The body of every test binary's `sluice_as_child` test: nothing in a normal test run; in a
/// child started by [`command`] or [`set_args`], runs `sluice` and exits with its status.
pub fn run_if_child() {
    let Some(argv) = std::env::var_os(ARGV) else {
        return;
    };
    let args: Vec<String> = argv
        .to_string_lossy()
        .split('\n')
        .map(str::to_owned)
        .collect();
    std::process::exit(i32::from(lb_userspace::cli::main_with(args)));
}

/// Makes `cmd` (this test binary, possibly behind a prefix such as `setpriv ... --`) run
/// `sluice ARGS...`: the harness arguments that select the child's test, and [`ARGV`].
/// Call it after any `env_clear`.
pub fn set_args<'c>(cmd: &'c mut Command, args: &[&str]) -> &'c mut Command {
    let argv: Vec<&str> = std::iter::once("sluice")
        .chain(args.iter().copied())
        .collect();
    cmd.args([
        "--exact",
        "sluice_as_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(ARGV, argv.join("\n"))
}

/// `sluice ARGS...` as a child process of this test binary, ready to run.
pub fn command(args: &[&str]) -> std::io::Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    set_args(&mut cmd, args);
    Ok(cmd)
}
