//! Criterion benches of the marshalling layer (being written).

fn main() {}
