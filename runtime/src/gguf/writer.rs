//! Writing GGUF files (version 3) one tensor at a time: the header and tensor table first, then each
//! tensor's bytes as the caller produces them, so a whole model never sits in memory. The file is
//! written to `OUT.partial` and renamed when complete: an error leaves no output (and removes the
//! partial file); an existing output is refused before anything is written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{GgufValue, DEFAULT_ALIGNMENT, MAGIC};
use crate::{Error, Result};

/// One tensor of the table: its name, shape in PyTorch order (written innermost first), ggml type
/// id and the number of bytes its data will have.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: u32,
    pub bytes: usize,
}

/// Where a GGUF is written before its rename: `OUT.partial`.
pub fn gguf_partial_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes `metadata` (in order; `general.alignment` only if the caller lists it, as llama.cpp's
/// converter writes none for the default 32) and `tensors`, asking `data(i)` for tensor i's bytes
/// in table order. Each must be exactly `tensors[i].bytes` long; each is zero-padded to 32 bytes.
pub fn write_gguf_streaming(
    output: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorInfo],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    if output.exists() {
        return Err(Error::load(
            output,
            "the output already exists; not overwriting it",
        ));
    }
    let partial = gguf_partial_path(output);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| {
            Error::load(
                &partial,
                format!("cannot create (a previous run's partial file? remove it): {e}"),
            )
        })?;
    let result = write_all(file, &partial, metadata, tensors, &mut data).and_then(|()| {
        std::fs::rename(&partial, output)
            .map_err(|e| Error::load(output, format!("cannot rename {}: {e}", partial.display())))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn write_all(
    file: File,
    partial: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorInfo],
    data: &mut dyn FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let align = DEFAULT_ALIGNMENT as usize;
    let padded = |n: usize| n.div_ceil(align) * align;
    let mut head = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    head.extend(MAGIC);
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut head, key);
        head.extend(value.type_id().to_le_bytes());
        value.write(&mut head);
    }
    let mut offset = 0usize;
    for t in tensors {
        string(&mut head, &t.name);
        head.extend((t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            head.extend((*d as u64).to_le_bytes());
        }
        head.extend(t.ggml_type.to_le_bytes());
        head.extend((offset as u64).to_le_bytes());
        offset += padded(t.bytes);
    }
    head.resize(padded(head.len()), 0);
    let io = |e: std::io::Error| Error::load(partial, format!("cannot write: {e}"));
    let mut out = BufWriter::new(file);
    out.write_all(&head).map_err(io)?;
    for (i, t) in tensors.iter().enumerate() {
        let bytes = data(i)?;
        if bytes.len() != t.bytes {
            return Err(Error::load(
                partial,
                format!(
                    "tensor `{}` {:?}: {} bytes given, the table says {}",
                    t.name,
                    t.shape,
                    bytes.len(),
                    t.bytes
                ),
            ));
        }
        out.write_all(&bytes).map_err(io)?;
        out.write_all(&vec![0u8; padded(bytes.len()) - bytes.len()])
            .map_err(io)?;
    }
    out.flush().map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("kiln-gguf-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn info(name: &str, bytes: usize) -> GgufTensorInfo {
        GgufTensorInfo {
            name: name.into(),
            shape: vec![bytes / 4],
            ggml_type: 0,
            bytes,
        }
    }

    #[test]
    fn streams_tensors_in_order_without_an_alignment_key() {
        let out = dir("ok").join("m.gguf");
        let kv = vec![("general.architecture".to_string(), "llama".into())];
        let tensors = [info("a", 12), info("b", 40)];
        let mut asked = Vec::new();
        write_gguf_streaming(&out, &kv, &tensors, |i| {
            asked.push(i);
            Ok(vec![i as u8 + 1; tensors[i].bytes])
        })
        .unwrap();
        assert_eq!(asked, [0, 1]);
        let g = GgufFile::open(&out).unwrap();
        assert_eq!(g.bytes("a").unwrap(), [1; 12]);
        assert_eq!(g.bytes("b").unwrap(), [2; 40]);
        assert_eq!(g.get_str("general.architecture"), Some("llama"));
        assert!(g.value("general.alignment").is_none());
        assert!(!gguf_partial_path(&out).exists());
    }

    #[test]
    fn errors_leave_no_file_and_existing_outputs_are_kept() {
        let d = dir("bad");
        let out = d.join("m.gguf");
        let tensors = [info("a", 12), info("b", 8)];
        // A failing producer mid-file.
        let e = write_gguf_streaming(&out, &[], &tensors, |i| {
            if i == 1 {
                Err(Error::load("b", "read failed"))
            } else {
                Ok(vec![0; 12])
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("read failed"), "{e}");
        // Bytes that disagree with the table.
        let e = write_gguf_streaming(&out, &[], &tensors, |_| Ok(vec![0; 12]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`b` [2]: 12 bytes given, the table says 8"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        std::fs::write(&out, b"keep").unwrap();
        let e = write_gguf_streaming(&out, &[], &tensors, |i| Ok(vec![0; tensors[i].bytes]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    }
}
