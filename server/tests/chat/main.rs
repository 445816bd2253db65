//! `kiln serve`'s chat API over real HTTP, driven by a third-party OpenAI client (`async-openai`)
//! as users' programs drive it, and by raw HTTP where a client would hide what is checked (error
//! bodies, status codes, SSE framing). Models: the bundled arithmetic chat model on the CPU
//! backend (text only: image requests get as far as its "no vision encoder" refusal).

mod api;
mod common;
mod concurrency;
mod errors;
mod gguf;
mod images;
mod structured;
mod vision;
