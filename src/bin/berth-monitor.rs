//! `berth-monitor`: the per-container monitor (see the `berth_monitor` crate). A binary of
//! its own, linking only that small crate, so each resident monitor costs little memory
//! while both binaries are position-independent.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = berth_monitor::main(&args);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(255))
}
