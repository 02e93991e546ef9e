//! `vsync-demo` — the main job: a local multi-member demo and benchmark of the whole vsync
//! stack on the embedded oracle (loopback). See [`vsync_tools::demo`].

use std::process::ExitCode;

use clap::Parser;
use vsync_tools::demo::{run_demo, DemoArgs};

fn main() -> ExitCode {
    let args = DemoArgs::parse();
    match run_demo(&args) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vsync-demo: error: {e}");
            ExitCode::from(1)
        }
    }
}
