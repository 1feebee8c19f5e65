//! The `onnx-rewrite` binary: parse arguments, run, print the error chain, exit with the documented code
//! (README "Exit codes").

use clap::Parser;

fn main() {
    let cli = match onnx_rewrite::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match std::panic::catch_unwind(|| onnx_rewrite::cli::run(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            e.exit_code()
        }
        Err(_) => 1,
    };
    std::process::exit(code);
}
