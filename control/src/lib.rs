//! # vsync-control
//!
//! The control plane of vsync (being built): the ORACLE membership service, failure
//! detection, views and Dr. Multicast address mapping, as sans-IO state machines.
