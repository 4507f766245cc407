//! filehostfs: mount file-hosting accounts as a local folder.
//!
//! Data flows one way: kernel -> [`fs`] -> [`cache`] -> [`remote`]. The
//! [`emulator`] is a separate HTTP server that speaks the services' APIs for
//! tests, benchmarks and the demo; it shares no wire-format code with the
//! clients in [`remote`].

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod demo;
pub mod emulator;
pub mod fs;
pub mod metadata;
pub mod remote;
pub mod state_dir;
