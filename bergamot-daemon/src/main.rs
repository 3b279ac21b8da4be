//! `bergamotd`: the reference Bergamot daemon. Everything lives in the
//! library; a packager's own daemon is this file with its own executors.

use bergamot_core::exec::Executors;
use std::process::ExitCode;

fn main() -> ExitCode {
    bergamot_daemon::cli::main(Executors::standard)
}
