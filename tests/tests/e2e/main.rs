//! End-to-end tests: the real binaries, started as a person or a service manager would start them.
//!
//! One test binary for the whole workspace (a build-time choice on a 2-core machine); each area of
//! the system has its own module.

mod config_bounds;
mod demo;
mod foundation;
mod hostile;
mod lab;
mod lab_netns;
mod limits;
mod maas;
mod output;
mod redeploy;
mod security;
mod verify;
