"""nightshift sandbox service: compiles and tests untrusted Rust in isolation."""
