//! Refusing pickled checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`) before anything reads them.

use std::io::Read;
use std::path::Path;

use kiln_runtime::{Error, Result};

const PICKLE_EXTENSIONS: [&str; 5] = ["ckpt", "pt", "pth", "bin", "pkl"];

/// How to convert a pickle, once, with the user's own Python (`weights_only=True` is PyTorch's
/// restricted unpickler; `clone()` separates tensors that share storage, which safetensors refuses).
const CONVERT: &str = "python -c \"import torch, safetensors.torch as st; \
sd = torch.load('model.ckpt', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); \
st.save_file({k: v.clone().contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, \
'model.safetensors')\"";

fn refusal(path: &Path, why: &str) -> Error {
    Error::load(
        path,
        format!(
            "{why}: a Python pickle (the legacy .ckpt format). Loading a pickle can run arbitrary code, \
             so kiln does not read them. Convert it to .safetensors once, in a Python environment with \
             PyTorch and safetensors, and load that instead:\n  {CONVERT}\n(if torch.load refuses the \
             file with weights_only=True, it holds more than tensors: only convert files you trust \
             with weights_only=False)"
        ),
    )
}

/// Errors for a pickled checkpoint, by extension or by content (a torch zip archive or a raw pickle
/// renamed to .safetensors); other files pass to the safetensors parser.
pub fn refuse_pickles(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if let Some(ext) = ext.filter(|e| PICKLE_EXTENSIONS.contains(&e.as_str())) {
        return Err(refusal(path, &format!("this is a .{ext} file")));
    }
    let mut head = [0u8; 9];
    let mut read = 0;
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::load(path, format!("cannot open: {e}")))?;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(Error::load(path, format!("cannot read: {e}"))),
        }
    }
    let head = &head[..read];
    if head.starts_with(b"PK\x03\x04") {
        return Err(refusal(path, "this file is a PyTorch zip archive"));
    }
    // A pickle starts with the PROTO opcode 0x80 and a protocol number 2..=5. A safetensors file starts
    // with its header length (u64, little-endian) and then the JSON header's `{`, which tells the two
    // apart even when the length's low bytes look like PROTO.
    let proto = head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]);
    if proto && head.get(8) != Some(&b'{') {
        return Err(refusal(path, "this file is a raw pickle"));
    }
    Ok(())
}
