//! End-to-end tests: the real binaries, started as a person or a service manager would start them.
//!
//! One test binary for the whole workspace (a build-time choice on a 2-core machine); each area of
//! the system has its own module.

mod demo;
mod foundation;
mod lab;
mod lab_netns;
mod limits;
mod maas;
mod redeploy;
mod security;
mod verify;
