//! A1111's model hash: the first 10 hex digits of the weights file's SHA-256 (its "new" hash,
//! shown as `Model hash` in infotexts and as `[hash]` in model titles).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{PipelineError, Result};

/// The full SHA-256 of `path`, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let fail = |e: std::io::Error| PipelineError::model(path, format!("cannot hash: {e}"));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The short hash A1111 prints: the first 10 hex digits of the SHA-256.
pub fn short_hash(path: &Path) -> Result<String> {
    let mut full = sha256_file(path)?;
    full.truncate(10);
    Ok(full)
}
