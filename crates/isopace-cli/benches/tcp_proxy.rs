//! Throughput and added latency of the tcp-proxy versus a direct connection.

fn main() {}
