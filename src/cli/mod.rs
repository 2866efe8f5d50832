//! The command-line interface of the `ekka` binary.

pub mod agent;
pub mod args;
pub mod cluster;
pub mod config;
pub mod data;
pub mod http;
pub mod output;
pub mod up;
