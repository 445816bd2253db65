//! GGUF files (llama.cpp / stable-diffusion.cpp): the header, metadata and tensor table, with the
//! tensor bytes memory-mapped. Shapes are given in PyTorch order (GGUF lists dimensions innermost
//! first). Only tensor types kiln can run are accepted: F32, F16, BF16, and the ggml block types that
//! are kiln `QuantFormat`s byte for byte (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K); any other type
//! fails at open, naming the tensor and type.
//!
//! Every metadata value is kept, typed (`GgufValue`): integers, floats, bools, strings and arrays of
//! them (a tokenizer's tokens, merges, scores and token types). Every length is checked against the
//! bytes left before anything is allocated or read, so a truncated or corrupt header is an error
//! naming the file, never a panic or a read past the mapping.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{Error, QuantFormat, Result};

mod writer;
pub use writer::{gguf_partial_path, write_gguf_streaming, GgufTensorInfo};

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

/// A metadata value as the file stores it.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// Invalid UTF-8 in a value is replaced by U+FFFD (keys and tensor names must be valid).
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer that fits (negative ones do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Floats, and integers as floats (llama.cpp's converter writes some scores as integers).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// GGUF's name of the value's type ("u32", "string", "array"), for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F32(_) => "f32",
            GgufValue::F64(_) => "f64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }

    /// GGUF's type id.
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// A scalar as text, as the string view of the metadata shows it (`None` for arrays).
    fn scalar_text(&self) -> Option<String> {
        Some(match self {
            GgufValue::String(s) => s.clone(),
            GgufValue::Array(_) => return None,
            GgufValue::F32(v) => v.to_string(),
            GgufValue::F64(v) => v.to_string(),
            GgufValue::Bool(v) => v.to_string(),
            v => v
                .as_i64()
                .map(|i| i.to_string())
                .or_else(|| v.as_u64().map(|u| u.to_string()))?,
        })
    }

    /// Appends the value's bytes (without its type id) as a GGUF file stores them.
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            GgufValue::U8(v) => out.push(*v),
            GgufValue::I8(v) => out.extend(v.to_le_bytes()),
            GgufValue::U16(v) => out.extend(v.to_le_bytes()),
            GgufValue::I16(v) => out.extend(v.to_le_bytes()),
            GgufValue::U32(v) => out.extend(v.to_le_bytes()),
            GgufValue::I32(v) => out.extend(v.to_le_bytes()),
            GgufValue::U64(v) => out.extend(v.to_le_bytes()),
            GgufValue::I64(v) => out.extend(v.to_le_bytes()),
            GgufValue::F32(v) => out.extend(v.to_le_bytes()),
            GgufValue::F64(v) => out.extend(v.to_le_bytes()),
            GgufValue::Bool(v) => out.push(u8::from(*v)),
            GgufValue::String(s) => {
                out.extend((s.len() as u64).to_le_bytes());
                out.extend(s.as_bytes());
            }
            GgufValue::Array(items) => {
                let elem = items.first().map_or(4, GgufValue::type_id);
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }
}

impl From<&str> for GgufValue {
    fn from(s: &str) -> GgufValue {
        GgufValue::String(s.to_string())
    }
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
    /// Every metadata value.
    values: HashMap<String, GgufValue>,
    /// The scalar values as text (strings as they are, numbers and bools written out).
    metadata: HashMap<String, String>,
}

/// Arrays nest at most this deep (llama.cpp reads no nested arrays at all).
const MAX_ARRAY_DEPTH: usize = 2;
/// Tensors have at most this many dimensions (ggml has 4).
const MAX_DIMS: usize = 8;

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
    /// A key or tensor name: must be UTF-8.
    fn name(&mut self) -> Result<String> {
        self.string()
    }
    /// A string value: invalid UTF-8 is replaced, as a tokenizer's odd byte token may hold some.
    fn lossy_string(&mut self) -> Result<String> {
        let n = self.usize("string length")?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
    /// Moves past a metadata value of type `ty` without keeping it.
    fn skip(&mut self, ty: u32, key: &str, depth: usize) -> Result<()> {
        let fixed = |ty: u32| match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match ty {
            8 => {
                let n = self.usize("string length")?;
                self.take(n).map(|_| ())
            }
            9 if depth < MAX_ARRAY_DEPTH => {
                let elem = self.u32()?;
                let count = self.usize("array length")?;
                match fixed(elem) {
                    Some(size) => {
                        let n = count.checked_mul(size).ok_or_else(|| {
                            Error::load(self.path, format!("GGUF metadata `{key}`: array too long"))
                        })?;
                        self.take(n).map(|_| ())
                    }
                    None => (0..count).try_for_each(|_| self.skip(elem, key, depth + 1)),
                }
            }
            // Anything else is read, for its error.
            _ => self.value(ty, key, depth).map(|_| ()),
        }
    }

    /// Reads a metadata value of type `ty`.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let bytes = |r: &mut Self, n: usize| r.take(n).map(|b| b.to_vec());
        Ok(match ty {
            0 => GgufValue::U8(self.take(1)?[0]),
            1 => GgufValue::I8(self.take(1)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(bytes(self, 2)?.try_into().expect("2"))),
            3 => GgufValue::I16(i16::from_le_bytes(bytes(self, 2)?.try_into().expect("2"))),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(self.u32()? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32()?)),
            7 => GgufValue::Bool(self.take(1)?[0] != 0),
            8 => GgufValue::String(self.lossy_string()?),
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::load(
                        self.path,
                        format!(
                            "GGUF metadata `{key}`: arrays nested more than {MAX_ARRAY_DEPTH} deep"
                        ),
                    ));
                }
                let elem = self.u32()?;
                let count = self.usize("array length")?;
                // The least each element takes: checked before allocating, so a corrupt length
                // cannot ask for more memory than the file could hold.
                let least = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    _ => {
                        return Err(Error::load(
                            self.path,
                            format!("GGUF metadata `{key}`: array of unknown type {elem}"),
                        ))
                    }
                };
                if count
                    .checked_mul(least)
                    .is_none_or(|n| n > self.remaining())
                {
                    return Err(Error::load(
                        self.path,
                        format!(
                            "GGUF metadata `{key}`: an array of {count} elements does not fit in the \
                             {} bytes left at offset {}: truncated or corrupt",
                            self.remaining(),
                            self.at
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            _ => {
                return Err(Error::load(
                    self.path,
                    format!("GGUF metadata `{key}` has unknown type {ty}"),
                ))
            }
        })
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
        let header = parse_header(&path, &mmap)?;
        let (tensors, values) = place_tensors(&path, &mmap, header)?;
        let metadata = values
            .iter()
            .filter_map(|(k, v)| v.scalar_text().map(|t| (k.clone(), t)))
            .collect();
        Ok(GgufFile {
            path,
            mmap,
            tensors,
            values,
            metadata,
        })
    }

    /// One metadata value of `path`, reading the header only up to it (a model list asks each
    /// file for `general.architecture` without parsing a vocabulary of 100k strings).
    pub fn read_value(path: impl AsRef<Path>, key: &str) -> Result<Option<GgufValue>> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::load(path, format!("cannot open: {e}")))?;
        // SAFETY: read-only mapping, as in `open`.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::load(path, format!("cannot map: {e}")))?;
        let mut r = Reader {
            path,
            bytes: &mmap,
            at: 0,
        };
        let (_, kvs) = parse_start(&mut r)?;
        for _ in 0..kvs {
            let name = r.name()?;
            let ty = r.u32()?;
            if name == key {
                return r.value(ty, &name, 0).map(Some);
            }
            r.skip(ty, &name, 0)?;
        }
        Ok(None)
    }

    /// Only the metadata of `path`, whatever its tensors' types (a file kiln cannot run still
    /// says what it is).
    pub fn read_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, GgufValue>> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::load(path, format!("cannot open: {e}")))?;
        // SAFETY: read-only mapping, as in `open`.
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::load(path, format!("cannot map: {e}")))?;
        parse_header(path, &mmap).map(|h| h.values)
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

    /// The scalar metadata values as text (strings as they are, numbers and bools written out);
    /// arrays are only in [`values`](Self::values).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Every metadata value, typed.
    pub fn values(&self) -> &HashMap<String, GgufValue> {
        &self.values
    }

    pub fn value(&self, key: &str) -> Option<&GgufValue> {
        self.values.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.value(key).and_then(GgufValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.value(key).and_then(GgufValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.value(key).and_then(GgufValue::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.value(key).and_then(GgufValue::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Option<&[GgufValue]> {
        self.value(key).and_then(GgufValue::as_array)
    }

    /// An array of strings (a tokenizer's tokens or merges); an error naming the key when it is
    /// there but not that.
    pub fn get_strings(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(items) = self.value(key) else {
            return Ok(None);
        };
        items
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_str).collect::<Option<Vec<_>>>())
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an array of strings"))
    }

    /// An array of numbers (scores, token types) as f64.
    pub fn get_numbers(&self, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(items) = self.value(key) else {
            return Ok(None);
        };
        items
            .as_array()
            .and_then(|a| a.iter().map(GgufValue::as_f64).collect::<Option<Vec<_>>>())
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "an array of numbers"))
    }

    fn wrong_type(&self, key: &str, wanted: &str) -> Error {
        let found = self.value(key).map_or("nothing", GgufValue::type_name);
        Error::load(
            &self.path,
            format!("GGUF metadata `{key}` is {found}, expected {wanted}"),
        )
    }

    /// A tensor's stored bytes.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensors.get(name).map(|t| &self.mmap[t.start..t.end])
    }

    /// Drops a tensor's file pages from this process's resident memory once its bytes have been
    /// copied out, so loading a model does not hold the file's pages beside the loaded copy (the
    /// page cache keeps them while memory allows). A later read faults them in again from the file.
    /// Only whole 64 KiB spans inside the tensor are released (a multiple of every page size in
    /// use), so neighbouring tensors keep theirs; errors only leave the pages resident.
    pub fn release(&self, name: &str) {
        let Some(t) = self.tensors.get(name) else {
            return;
        };
        const SPAN: usize = 1 << 16;
        let base = self.mmap.as_ptr() as usize;
        let start = (base + t.start).next_multiple_of(SPAN);
        let end = (base + t.end) / SPAN * SPAN;
        if end > start {
            let (start, end) = (start - base, end - base);
            #[cfg(unix)]
            // SAFETY: the mapping is read-only and backed by the file, so MADV_DONTNEED discards no
            // data: the next access reads the same bytes back from the file (the file must not
            // change while mapped, which every read of this mapping already assumes).
            let _ = unsafe {
                self.mmap.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    end - start,
                )
            };
        }
    }
}

/// What the header holds: the metadata, the tensor table (name, shape, ggml type id, offset) and
/// where the tensor data starts; nothing about the tensors is checked yet.
struct Header {
    values: HashMap<String, GgufValue>,
    infos: Vec<(String, Vec<usize>, u32, usize)>,
    data: u64,
    alignment: u64,
}

/// The magic and version; returns the tensor and metadata counts.
fn parse_start(r: &mut Reader) -> Result<(usize, usize)> {
    if r.take(4).ok() != Some(MAGIC.as_slice()) {
        return Err(Error::load(r.path, "not a GGUF file (no GGUF magic)"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Error::load(
            r.path,
            format!("GGUF version {version}; kiln reads versions 2 and 3"),
        ));
    }
    Ok((r.usize("tensor count")?, r.usize("metadata count")?))
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut r = Reader { path, bytes, at: 0 };
    let (count, kvs) = parse_start(&mut r)?;
    let mut values = HashMap::new();
    for _ in 0..kvs {
        let key = r.name()?;
        let ty = r.u32()?;
        let value = r.value(ty, &key, 0)?;
        values.insert(key, value);
    }
    let mut infos = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let name = r.name()?;
        let dims = r.u32()? as usize;
        if dims > MAX_DIMS {
            return Err(Error::load(
                path,
                format!("tensor `{name}` has {dims} dimensions: corrupt GGUF tensor table"),
            ));
        }
        let mut shape = (0..dims)
            .map(|_| r.usize("dimension"))
            .collect::<Result<Vec<_>>>()?;
        shape.reverse();
        let id = r.u32()?;
        let offset = r.usize("tensor offset")?;
        infos.push((name, shape, id, offset));
    }
    let alignment = match values.get("general.alignment") {
        Some(a) => a.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| {
            Error::load(
                path,
                format!("GGUF general.alignment {a:?} is not a power of two"),
            )
        })?,
        None => DEFAULT_ALIGNMENT,
    };
    let data = (r.at as u64).div_ceil(alignment) * alignment;
    Ok(Header {
        values,
        infos,
        data,
        alignment,
    })
}

/// Checks each tensor's type, size and place: within the file, aligned, not overlapping the next
/// one (a size that does not match the type and shape).
fn place_tensors(
    path: &Path,
    bytes: &[u8],
    header: Header,
) -> Result<(HashMap<String, GgufTensor>, HashMap<String, GgufValue>)> {
    let Header {
        values,
        infos,
        data,
        alignment,
    } = header;
    let mut tensors = HashMap::new();
    for (name, shape, id, offset) in infos {
        let kind = GgufType::from_id(id).map_err(|ty| {
            Error::load(
                path,
                format!("tensor `{name}` {shape:?} has type {ty}; kiln reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K GGUF tensors"),
            )
        })?;
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
        if !(offset as u64).is_multiple_of(alignment) {
            return Err(Error::load(
                path,
                format!("tensor `{name}` {shape:?} starts at offset {offset}, not a multiple of the alignment {alignment}: corrupt"),
            ));
        }
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
        let tensor = GgufTensor {
            kind,
            shape,
            start,
            end,
        };
        if tensors.insert(name.clone(), tensor).is_some() {
            return Err(Error::load(
                path,
                format!("tensor `{name}` is listed twice"),
            ));
        }
    }
    // Each tensor's bytes end before the next one's begin: a tensor whose type and shape claim
    // more bytes than the file gives it runs into its neighbour.
    let mut order: Vec<(&String, &GgufTensor)> = tensors.iter().collect();
    order.sort_by_key(|(name, t)| (t.start, t.end, *name));
    for pair in order.windows(2) {
        let ((name, t), (next, n)) = (pair[0], pair[1]);
        if t.end > n.start {
            return Err(Error::load(
                path,
                format!(
                    "tensor `{name}` {:?} {} needs {} bytes from offset {}, past the start of `{next}` at {}: \
                     its size does not match its type and shape (corrupt file)",
                    t.shape,
                    t.kind.name(),
                    t.end - t.start,
                    t.start,
                    n.start
                ),
            ));
        }
    }
    Ok((tensors, values))
}

/// A tensor for [`write_gguf`]: `(name, shape in PyTorch order, ggml type id, bytes)`.
pub type GgufTensorData<'a> = (&'a str, Vec<usize>, u32, Vec<u8>);

/// Writes a GGUF file (version 3, no metadata but the alignment) of `(name, shape in PyTorch order,
/// ggml type id, bytes)`: for tests and tools.
pub fn write_gguf(path: &Path, tensors: &[GgufTensorData]) -> Result<()> {
    write_gguf_with(path, &[], tensors)
}

/// As [`write_gguf`], with `metadata` after `general.alignment` in the order given. Each tensor
/// takes its bytes' length (aligned), whatever its type and shape say, so tests can write
/// inconsistent files. An existing `path` is replaced.
pub fn write_gguf_with(
    path: &Path,
    metadata: &[(&str, GgufValue)],
    tensors: &[GgufTensorData],
) -> Result<()> {
    let mut kv = vec![(
        "general.alignment".to_string(),
        GgufValue::U32(DEFAULT_ALIGNMENT as u32),
    )];
    kv.extend(metadata.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let infos: Vec<GgufTensorInfo> = tensors
        .iter()
        .map(|(name, shape, ty, bytes)| GgufTensorInfo {
            name: name.to_string(),
            shape: shape.clone(),
            ggml_type: *ty,
            bytes: bytes.len(),
        })
        .collect();
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| Error::load(path, e.to_string()))?;
    }
    write_gguf_streaming(path, &kv, &infos, |i| Ok(tensors[i].3.clone()))
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
    fn released_tensors_read_back_the_same_bytes() {
        let path = temp("release");
        // 300 KiB: several whole 64 KiB spans get released; the small tensor shares none.
        let big: Vec<u8> = (0..300 * 1024 / 4)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let small: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
        write_gguf(
            &path,
            &[
                ("small", vec![8], 0, small.clone()),
                ("big", vec![big.len() / 4], 0, big.clone()),
            ],
        )
        .unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.bytes("big").unwrap(), big);
        g.release("big");
        g.release("small");
        g.release("no such tensor");
        assert_eq!(g.bytes("big").unwrap(), big);
        assert_eq!(g.bytes("small").unwrap(), small);
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

    #[test]
    fn metadata_values_keep_their_types() {
        let path = temp("values");
        let tokens = GgufValue::Array(vec!["<s>".into(), "a".into(), "\u{0120}b".into()]);
        let scores = GgufValue::Array(vec![GgufValue::F32(0.0), GgufValue::F32(-1.5)]);
        let types = GgufValue::Array(vec![GgufValue::I32(3), GgufValue::I32(1)]);
        write_gguf_with(
            &path,
            &[
                ("general.architecture", "llama".into()),
                ("llama.block_count", GgufValue::U32(2)),
                ("llama.rope.freq_base", GgufValue::F32(1e6)),
                ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
                ("big", GgufValue::U64(1 << 40)),
                ("neg", GgufValue::I64(-3)),
                ("tokenizer.ggml.tokens", tokens.clone()),
                ("tokenizer.ggml.scores", scores),
                ("tokenizer.ggml.token_type", types),
                (
                    "nested",
                    GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::U8(7)])]),
                ),
            ],
            &[("w", vec![2, 32], 8, vec![0; 68])],
        )
        .unwrap();
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.get_str("general.architecture"), Some("llama"));
        assert_eq!(g.get_u64("llama.block_count"), Some(2));
        assert_eq!(g.get_f64("llama.rope.freq_base"), Some(1e6));
        assert_eq!(g.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
        assert_eq!(g.get_u64("big"), Some(1 << 40));
        assert_eq!(
            (g.get_u64("neg"), g.value("neg").and_then(GgufValue::as_i64)),
            (None, Some(-3))
        );
        assert_eq!(g.value("tokenizer.ggml.tokens"), Some(&tokens));
        assert_eq!(
            g.get_strings("tokenizer.ggml.tokens").unwrap().unwrap(),
            ["<s>", "a", "\u{0120}b"]
        );
        assert_eq!(
            g.get_numbers("tokenizer.ggml.scores").unwrap().unwrap(),
            [0.0, -1.5]
        );
        assert_eq!(
            g.get_numbers("tokenizer.ggml.token_type").unwrap().unwrap(),
            [3.0, 1.0]
        );
        assert_eq!(g.get_strings("absent").unwrap(), None);
        let e = g.get_strings("llama.block_count").unwrap_err().to_string();
        assert!(
            e.contains("`llama.block_count` is u32, expected an array of strings"),
            "{e}"
        );
        assert_eq!(g.get_array("nested").unwrap().len(), 1);
        // The string view keeps the scalars, as before.
        assert_eq!(g.metadata()["general.architecture"], "llama");
        assert_eq!(g.metadata()["llama.block_count"], "2");
        assert!(!g.metadata().contains_key("tokenizer.ggml.tokens"));
        // Metadata alone reads without checking the tensors; one value reads past the others.
        let m = GgufFile::read_metadata(&path).unwrap();
        assert_eq!(m["general.architecture"].as_str(), Some("llama"));
        for (key, value) in &m {
            assert_eq!(
                GgufFile::read_value(&path, key).unwrap().as_ref(),
                Some(value),
                "{key}"
            );
        }
        assert_eq!(GgufFile::read_value(&path, "absent").unwrap(), None);
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_a_panic() {
        let path = temp("corrupt");
        let tokens = GgufValue::Array((0..100).map(|i| format!("t{i}").as_str().into()).collect());
        write_gguf_with(&path, &[("tokenizer.ggml.tokens", tokens)], &[]).unwrap();
        let good = std::fs::read(&path).unwrap();
        // Every truncation of the header fails with a message naming the file.
        let header = good.windows(3).position(|w| w == b"t99").unwrap() + 3;
        for cut in (0..header).step_by(7) {
            std::fs::write(&path, &good[..cut]).unwrap();
            let e = GgufFile::open(&path).err().unwrap().to_string();
            assert!(e.contains("m.gguf"), "{cut}: {e}");
        }
        // A huge array length is refused before anything is allocated.
        let at = good
            .windows(8)
            .position(|w| w == 100u64.to_le_bytes())
            .unwrap();
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("`tokenizer.ggml.tokens`") && e.contains("does not fit"),
            "{e}"
        );
        // A huge string length too.
        let mut bad = good.clone();
        let s = good.windows(2).position(|w| w == b"t0").unwrap() - 8;
        bad[s..s + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        assert!(GgufFile::open(&path).is_err());
        // An unknown value type.
        let mut bad = good.clone();
        let ty = good
            .windows(23)
            .position(|w| w == b"tokenizer.ggml.tokens\x09\0")
            .unwrap()
            + 21;
        bad[ty] = 99;
        std::fs::write(&path, &bad).unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("unknown type 99"), "{e}");
    }

    #[test]
    fn a_tensor_larger_than_its_room_is_named() {
        let path = temp("overlap");
        // `a` claims 4 rows of Q8_0 (136 bytes) but the file gives it 68 before `b`.
        write_gguf(
            &path,
            &[
                ("a", vec![4, 32], 8, vec![0; 68]),
                ("b", vec![2, 32], 8, vec![0; 68]),
            ],
        )
        .unwrap();
        let e = GgufFile::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("`a` [4, 32] Q8_0 needs 136 bytes") && e.contains("`b`"),
            "{e}"
        );
        assert!(e.contains("does not match its type and shape"), "{e}");
    }
}
