//! `kiln serve` over real HTTP: an in-process server on a free port with the bundled tiny model on
//! the CPU backend, driven by a plain HTTP client.

mod browser;
mod common;
mod control;
mod loras;
mod routes;
mod scale_out;
mod upscalers;
mod validation;
