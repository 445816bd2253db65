//! GGUF files (llama.cpp / stable-diffusion.cpp): the header, metadata and tensor table, with the
//! tensor bytes memory-mapped. Shapes are given in PyTorch order (GGUF lists dimensions innermost
//! first). Only tensor types kiln can run are accepted: F32, F16, BF16, and the ggml block types that
//! are kiln `QuantFormat`s byte for byte (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K); any other type
//! fails at open, naming the tensor and type.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{Error, QuantFormat, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// How a GGUF tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    Bf16,
    Packed(QuantFormat),
    /// Integer and f64 buffers (CLIP's position_ids): listed, so a file holding them opens, but no
    /// weight kiln builds reads them. Holds the ggml type id.
    Other(u32),
}

impl GgufType {
    /// The ggml type id, or the type's name for the error when kiln does not run it.
    fn from_id(id: u32) -> std::result::Result<GgufType, String> {
        Ok(match id {
            0 => GgufType::F32,
            1 => GgufType::F16,
            30 => GgufType::Bf16,
            24..=28 => GgufType::Other(id),
            _ => match QuantFormat::from_ggml_type(id) {
                Some(format) => GgufType::Packed(format),
                None => return Err(ggml_type_name(id)),
            },
        })
    }

    /// Bytes of `n` elements.
    fn bytes(self, n: usize) -> Option<usize> {
        match self {
            GgufType::F32 => n.checked_mul(4),
            GgufType::F16 | GgufType::Bf16 => n.checked_mul(2),
            GgufType::Packed(f) => n
                .is_multiple_of(f.block_len())
                .then(|| n / f.block_len() * f.block_bytes()),
            GgufType::Other(id) => n.checked_mul(match id {
                24 => 1,
                25 => 2,
                26 => 4,
                _ => 8,
            }),
        }
    }

    /// The ggml name of the type ("F16", "Q8_0", "I64").
    pub fn name(self) -> String {
        ggml_type_name(match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Bf16 => 30,
            GgufType::Packed(format) => match format.ggml_type() {
                Some(id) => id,
                None => return format.name().to_ascii_uppercase(),
            },
            GgufType::Other(id) => id,
        })
    }
}

fn ggml_type_name(id: u32) -> String {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    NAMES
        .get(id as usize)
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("unknown type {id}"))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensor {
    pub kind: GgufType,
    /// PyTorch order (outermost first).
    pub shape: Vec<usize>,
    /// Byte range in the file.
    pub start: usize,
    pub end: usize,
}

pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    tensors: HashMap<String, GgufTensor>,
    /// String-valued metadata (other values are parsed past, not kept).
    metadata: HashMap<String, String>,
}

/// A cursor over the header with errors that name the file.
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                Error::load(
                    self.path,
                    format!(
                        "truncated GGUF header: {n} bytes wanted at offset {} of {}",
                        self.at,
                        self.bytes.len()
                    ),
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn usize(&mut self, what: &str) -> Result<usize> {
        let v = self.u64()?;
        usize::try_from(v)
            .map_err(|_| Error::load(self.path, format!("GGUF {what} {v} is too large")))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.usize("string length")?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| {
            Error::load(
                self.path,
                format!("GGUF string at offset {} is not UTF-8", self.at - n),
            )
        })
    }
    /// Reads a metadata value of `ty`, returning it when it is a string or an integer.
    fn value(&mut self, ty: u32) -> Result<Option<String>> {
        let fixed = |ty: u32| match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match ty {
            8 => self.string().map(Some),
            9 => {
                let elem = self.u32()?;
                let count = self.usize("array length")?;
                for _ in 0..count {
                    self.value(elem)?;
                }
                Ok(None)
            }
            4 => Ok(Some(self.u32()?.to_string())),
            10 => Ok(Some(self.u64()?.to_string())),
            _ => match fixed(ty) {
                Some(n) => self.take(n).map(|_| None),
                None => Err(Error::load(
                    self.path,
                    format!("GGUF metadata value of unknown type {ty}"),
                )),
            },
        }
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let file =
            File::open(&path).map_err(|e| Error::load(&path, format!("cannot open: {e}")))?;
        // SAFETY: read-only mapping, as for safetensors files (loader.rs).
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::load(&path, format!("cannot map: {e}")))?;
        let (tensors, metadata) = parse(&path, &mmap)?;
        Ok(GgufFile {
            path,
            mmap,
            tensors,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.get(name)
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// A tensor's stored bytes.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensors.get(name).map(|t| &self.mmap[t.start..t.end])
    }
}

fn parse(
    path: &Path,
    bytes: &[u8],
) -> Result<(HashMap<String, GgufTensor>, HashMap<String, String>)> {
    let mut r = Reader { path, bytes, at: 0 };
    if r.take(4).ok() != Some(MAGIC.as_slice()) {
        return Err(Error::load(path, "not a GGUF file (no GGUF magic)"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Error::load(
            path,
            format!("GGUF version {version}; kiln reads versions 2 and 3"),
        ));
    }
    let count = r.usize("tensor count")?;
    let kvs = r.usize("metadata count")?;
    let mut metadata = HashMap::new();
    for _ in 0..kvs {
        let key = r.string()?;
        let ty = r.u32()?;
        if let Some(v) = r.value(ty)? {
            metadata.insert(key, v);
        }
    }
    let alignment = match metadata.get("general.alignment") {
        Some(a) => a
            .parse::<u64>()
            .ok()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| {
                Error::load(
                    path,
                    format!("GGUF general.alignment {a} is not a power of two"),
                )
            })?,
        None => DEFAULT_ALIGNMENT,
    };
    let mut infos = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let name = r.string()?;
        let dims = r.u32()? as usize;
        let mut shape = (0..dims)
            .map(|_| r.usize("dimension"))
            .collect::<Result<Vec<_>>>()?;
        shape.reverse();
        let id = r.u32()?;
        let offset = r.usize("tensor offset")?;
        let kind = GgufType::from_id(id).map_err(|ty| {
            Error::load(
                path,
                format!("tensor `{name}` {shape:?} has type {ty}; kiln reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K GGUF tensors"),
            )
        })?;
        infos.push((name, shape, kind, offset));
    }
    let data = (r.at as u64).div_ceil(alignment) * alignment;
    let mut tensors = HashMap::new();
    for (name, shape, kind, offset) in infos {
        // ggml blocks run along the innermost dimension, so each row is whole blocks.
        if let GgufType::Packed(format) = kind {
            if !shape
                .last()
                .is_some_and(|k| k.is_multiple_of(format.block_len()))
            {
                return Err(Error::load(
                    path,
                    format!(
                        "tensor `{name}` {shape:?} has type {}, whose rows must be whole {}-weight blocks",
                        kind.name(),
                        format.block_len()
                    ),
                ));
            }
        }
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let size = n.and_then(|n| kind.bytes(n)).ok_or_else(|| {
            Error::load(
                path,
                format!("tensor `{name}` {shape:?} is not a whole number of {kind:?} blocks"),
            )
        })?;
        let start = usize::try_from(data)
            .ok()
            .and_then(|d| d.checked_add(offset));
        let range = start.and_then(|s| s.checked_add(size).map(|e| (s, e)));
        let (start, end) = range.filter(|&(_, e)| e <= bytes.len()).ok_or_else(|| {
            Error::load(
                path,
                format!("tensor `{name}` {shape:?} lies past the end of the file ({} bytes): truncated or corrupt", bytes.len()),
            )
        })?;
        tensors.insert(
            name,
            GgufTensor {
                kind,
                shape,
                start,
                end,
            },
        );
    }
    Ok((tensors, metadata))
}

/// Writes a GGUF file (version 3, no metadata but the alignment) of `(name, shape in PyTorch order,
/// ggml type id, bytes)`: for tests and tools.
pub fn write_gguf(path: &Path, tensors: &[(&str, Vec<usize>, u32, Vec<u8>)]) -> Result<()> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    out.extend(MAGIC);
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(1u64.to_le_bytes());
    string(&mut out, "general.alignment");
    out.extend(4u32.to_le_bytes());
    out.extend((DEFAULT_ALIGNMENT as u32).to_le_bytes());
    let mut offset = 0u64;
    for (name, shape, ty, bytes) in tensors {
        string(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset = (offset + bytes.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    }
    out.resize(
        out.len().div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize,
        0,
    );
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
        out.resize(
            out.len().div_ceil(DEFAULT_ALIGNMENT as usize) * DEFAULT_ALIGNMENT as usize,
            0,
        );
    }
    let tmp = path.with_extension("gguf.partial");
    std::fs::write(&tmp, out).map_err(|e| Error::load(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::load(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-gguf-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("m.gguf")
    }

    #[test]
    fn tensors_round_trip_with_pytorch_order_shapes() {
        let path = temp("ok");
        let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let q8: Vec<u8> = (0..68).map(|i| i as u8).collect();
        write_gguf(
            &path,
            &[
                ("a", vec![2, 3], 0, f32s.clone()),
                ("w", vec![2, 32], 8, q8.clone()),
            ],
        )
        .unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.names(), ["a", "w"]);
        assert_eq!(g.tensor("a").unwrap().shape, [2, 3]);
        assert_eq!(g.bytes("a").unwrap(), f32s);
        let w = g.tensor("w").unwrap();
        assert_eq!(
            (w.kind, w.shape.as_slice()),
            (GgufType::Packed(QuantFormat::Q8_0), &[2, 32][..])
        );
        assert_eq!(g.bytes("w").unwrap(), q8);
        assert_eq!(g.metadata()["general.alignment"], "32");
    }

    #[test]
    fn ggml_block_types_open_as_packed_weights() {
        let path = temp("blocks");
        let cases = [
            (3, QuantFormat::Q4_1, "Q4_1"),
            (6, QuantFormat::Q5_0, "Q5_0"),
            (7, QuantFormat::Q5_1, "Q5_1"),
            (10, QuantFormat::Q2K, "Q2_K"),
            (11, QuantFormat::Q3K, "Q3_K"),
            (12, QuantFormat::Q4K, "Q4_K"),
            (13, QuantFormat::Q5K, "Q5_K"),
            (14, QuantFormat::Q6K, "Q6_K"),
        ];
        for (id, format, name) in cases {
            let bytes: Vec<u8> = (0..3 * 256 / format.block_len() * format.block_bytes())
                .map(|i| i as u8)
                .collect();
            write_gguf(&path, &[("w", vec![3, 256], id, bytes.clone())]).unwrap();
            let g = GgufFile::open(&path).unwrap();
            let w = g.tensor("w").unwrap();
            assert_eq!(
                (w.kind, w.kind.name()),
                (GgufType::Packed(format), name.to_string())
            );
            assert_eq!(g.bytes("w").unwrap(), bytes, "{name}");
        }
        // Rows of 384 weights: 768 is three 256-weight blocks, but no row is whole blocks.
        write_gguf(&path, &[("w", vec![2, 384], 12, vec![0; 3 * 144])]).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("`w` [2, 384]") && e.contains("Q4_K") && e.contains("256-weight"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_types_and_truncation_are_named() {
        let path = temp("bad");
        write_gguf(
            &path,
            &[("blk.0.ffn.weight", vec![1, 256], 16, vec![0; 66])],
        )
        .unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("`blk.0.ffn.weight`") && e.contains("IQ2_XXS"),
            "{e}"
        );
        write_gguf(&path, &[("w", vec![2, 32], 8, vec![0; 68])]).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 40);
        std::fs::write(&path, bytes).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("`w`") && e.contains("truncated or corrupt"),
            "{e}"
        );
        std::fs::write(&path, b"GGUF\x01\0\0\0").unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("version 1"), "{e}");
    }
}
