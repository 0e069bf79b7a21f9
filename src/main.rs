//! The `fastretrain` binary: exit code 0 on success, 1 when a check fails, 2 on error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`fastretrain eval … | head`) instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // glibc gives each thread that allocates its own malloc arena and keeps the pages an arena
    // once held: with one backbone worker per core, each extra worker added ~105 MB to `learn`'s
    // peak RSS (MobileNetV2) for no speed (docs/FOOTPRINT.md). One arena for the process.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a malloc tunable set before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    match cli::run(cli::Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}{}", cli::flag_hint(&e));
            ExitCode::from(2)
        }
    }
}
