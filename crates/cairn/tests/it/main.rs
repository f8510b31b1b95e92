//! End-to-end tests: the real `cairn` binary, real node processes, real
//! libp2p over loopback sockets. One test binary, so the stack links once.

#![allow(clippy::unwrap_used)]

mod compute;
mod durability;
mod gateway;
mod harness;
mod index;
mod s3_clients;
mod storage;
mod usage;
