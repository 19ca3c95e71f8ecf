//! The command line: the book's numbers, reports and saved models, and a one-line error with a
//! non-zero exit (never a panic) for every kind of bad input.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod bad_files;
mod bad_options;
mod bench;
mod check;
mod device_fault;
mod devices;
mod divergence;
mod eval;
mod output;
mod outputs_safety;
mod plots;
mod resume;
mod resume_verify;
mod sweep;
mod train;
