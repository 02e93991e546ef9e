//! `vsync-slides` — one member of the slides' three-member program (`examples/slides.rs`) as a
//! standalone binary, for running it on several hosts: each host runs one copy with
//! `VSYNC_HOSTS` naming the oracle replicas' hosts (`vsync-oracle` on each, at
//! `VSYNC_ORACLE_PORT`) and `VSYNC_BIND_IP` its own address. Without them it uses the
//! embedded oracle on loopback, like the example.

#[path = "../../../examples/slides.rs"]
#[allow(dead_code)]
mod slides;

fn main() {
    let label = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    if let Err(e) = slides::run(&label) {
        eprintln!("vsync-slides: {e}");
        std::process::exit(1);
    }
}
