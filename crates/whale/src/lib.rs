//! The `whale` command line as a library: the subcommands (`commands/`), model
//! fetching (`pull`) and the HTTP server (`server/`). `main.rs` only parses
//! the arguments and calls in here; the library exists so that the fuzz
//! targets in `fuzz/` can drive the server's request parsing and validation
//! with arbitrary bytes.

pub mod commands;
pub mod pull;
pub mod server;
