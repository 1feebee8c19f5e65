//! The `onnx-rewrite` binary: parse arguments, run, print the error chain, exit with the documented code
//! (docs/recipes.md, "Exit codes").

use clap::Parser;
use onnx_rewrite::error::Exit;

fn main() {
    // `onnx-rewrite dump m.onnx | head`: when the reader goes away, end quietly as `cat` does (the default action
    // of SIGPIPE) instead of panicking in `println!`. Rust sets SIGPIPE to ignored before `main`; restore it.
    // Output files are unaffected: they are written to a temporary file and renamed, never through a pipe.
    #[cfg(unix)]
    // SAFETY: called first in main, before any thread is spawned; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match onnx_rewrite::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = e.print();
            std::process::exit(code.code());
        }
    };
    let code = match std::panic::catch_unwind(|| onnx_rewrite::cli::run(cli)) {
        Ok(Ok(exit)) => exit.code(),
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            e.exit_code()
        }
        Err(_) => Exit::Unexpected.code(),
    };
    std::process::exit(code);
}
