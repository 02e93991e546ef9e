//! # vsync-tools
//!
//! Library half of the `vsync-bench` and `vsync-netlab` binaries.
//!
//! Network lab:
//! * [`netlab`] — N-host labs in Linux network namespaces (bridge in its own namespace,
//!   veths, multicast routes, loss/delay, partitions), torn down on drop.
//! * [`signals`] — SIGINT/SIGTERM → a stop flag, so `Drop`-based cleanup always runs.
//!
//! Benchmark harness:
//! * [`transport`] — the [`transport::BenchTransport`] seam and per-mode constructors.
//! * [`raw`] — the raw UDP multicast baseline (`sendmmsg` / `recvmmsg`, non-blocking).
//! * [`reliable`] — the vsync data plane as a benchmark transport (embedded node per member).
//! * [`payload`] — the message layout and the machine-wide monotonic clock.
//! * [`member`] — one member's paced event loop and delivery accounting.
//! * [`loopback`] — all members as threads on 127.0.0.1.
//! * [`lab_run`] — one member per process / namespace, and the lab coordinator.
//! * [`ordered_bench`] — `vsync-bench ordered`: OrderedSend / Send over the full stack
//!   (real member and oracle processes) against raw UDP, and the member side of it.
//! * [`demo`] — `vsync-demo`, the main job: the slides' program and a Send / OrderedSend
//!   benchmark through the public `vsync` API on the embedded oracle, against raw UDP.
//! * [`report`] — per-receiver and aggregate figures, text and JSON output.
//! * [`cli`] — `vsync-bench`'s command line.
//! * [`json`] — a minimal JSON writer/parser (no serde in this workspace).

#![deny(missing_docs)]

pub mod cli;
pub mod demo;
pub mod json;
pub mod lab_run;
pub mod loopback;
pub mod member;
pub mod netlab;
pub mod ordered_bench;
pub mod payload;
pub mod raw;
pub mod reliable;
pub mod report;
pub mod signals;
pub mod transport;
pub mod vsync_lab;
