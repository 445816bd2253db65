//! A1111's LoRA hash (`AutoV3`, from the addnet extension): SHA-256 of a safetensors file's bytes
//! after its header, so editing the metadata leaves it unchanged. Infotexts show its first 12 hex.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::LoraError;

pub fn addnet_hash(path: &Path) -> Result<String, LoraError> {
    let fail = |e: std::io::Error| LoraError::file(path, format!("cannot hash: {e}"));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(fail)?;
    let header = u64::from_le_bytes(len);
    file.seek(SeekFrom::Start(8 + header)).map_err(fail)?;
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
