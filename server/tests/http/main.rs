//! `kiln serve` over real HTTP: an in-process server on a free port with the bundled tiny model on
//! the CPU backend, driven by a plain HTTP client.

// Threads here capture a server handle, whose queued jobs' GenerationParams can hold a refiner model
// (down to wgpu's types): proving that Send needs more than the default 128 levels.
#![recursion_limit = "256"]

mod browser;
mod common;
mod control;
mod controlnet;
mod hires;
mod loras;
mod outpaint;
mod routes;
mod scale_out;
mod upscalers;
mod validation;
mod xyz;
mod xyz_units;
