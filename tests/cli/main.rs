//! End-to-end tests of the `snapkv` binary: every test runs the real executable on files it
//! generates in a temporary directory.

mod build;
mod build_errors;
mod diff;
mod durations;
mod hostile;
mod json_numbers;
mod query;
mod text_inputs;
mod timestamps;
mod tools;
mod util;
