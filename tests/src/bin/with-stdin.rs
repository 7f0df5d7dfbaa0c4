//! `with-stdin`: a benchmark helper that runs a command with a file as its
//! standard input, without a shell in between (hyperfine `-N` cannot
//! redirect stdin). Leading `NAME=VALUE` arguments are added to the
//! environment, as with env(1). The command replaces this process (execvp):
//! the timed work is one extra exec, measured by running a no-op the same way.
//!
//! with-stdin FILE [NAME=VALUE...] COMMAND [ARGS...]

use std::os::unix::process::CommandExt;
use std::process::{Command, exit};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(file), rest) = (args.next(), args) else {
        eprintln!("usage: with-stdin FILE [NAME=VALUE...] COMMAND [ARGS...]");
        exit(2)
    };
    let mut rest = rest.peekable();
    let mut env = Vec::new();
    while let Some(a) = rest.peek() {
        let Some((k, v)) = a.to_str().and_then(|s| s.split_once('=')) else {
            break;
        };
        if k.is_empty() {
            break;
        }
        env.push((k.to_string(), v.to_string()));
        rest.next();
    }
    let Some(cmd) = rest.next() else {
        eprintln!("with-stdin: no command given");
        exit(2)
    };
    let input = std::fs::File::open(&file).unwrap_or_else(|e| {
        eprintln!("with-stdin: {}: {e}", file.to_string_lossy());
        exit(2)
    });
    let err = Command::new(&cmd).args(rest).envs(env).stdin(input).exec();
    eprintln!("with-stdin: {}: {err}", cmd.to_string_lossy());
    exit(127)
}
