//! The pieces of a SentencePiece `tokenizer.model` (a protobuf `ModelProto`): field 1 repeats
//! `SentencePiece { piece = 1 (string), score = 2 (float), type = 3 (enum, default NORMAL) }`; every
//! other field is skipped by its wire type. Just enough protobuf for that, with every length checked.

/// One vocabulary entry; `kind` is SentencePiece's type (1 normal, 2 unknown, 3 control,
/// 4 user-defined, 5 unused, 6 byte), which GGUF's token types share.
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: i32,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "a field of {n} bytes runs past the end at offset {}",
                    self.at
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    /// The next `(field, wire type)`, or None at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, String> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, k & 7)))
    }

    /// A field's payload: the bytes of a length-delimited field, else the raw value bytes.
    fn value(&mut self, wire: u64) -> Result<&'a [u8], String> {
        match wire {
            0 => {
                let start = self.at;
                self.varint()?;
                Ok(&self.bytes[start..self.at])
            }
            1 => self.take(8),
            2 => {
                let n = self.varint()? as usize;
                self.take(n)
            }
            5 => self.take(4),
            w => Err(format!(
                "unsupported protobuf wire type {w} at offset {}",
                self.at
            )),
        }
    }
}

/// The model's pieces in id order.
pub fn pieces(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::new();
    while let Some((field, wire)) = r.key()? {
        let payload = r.value(wire)?;
        if field != 1 || wire != 2 {
            continue;
        }
        let mut p = Reader {
            bytes: payload,
            at: 0,
        };
        let mut piece = Piece {
            piece: String::new(),
            score: 0.0,
            kind: 1,
        };
        while let Some((f, w)) = p.key()? {
            let v = p.value(w)?;
            match (f, w) {
                (1, 2) => {
                    piece.piece = String::from_utf8(v.to_vec())
                        .map_err(|_| format!("piece {} is not UTF-8", out.len()))?
                }
                (2, 5) => piece.score = f32::from_le_bytes([v[0], v[1], v[2], v[3]]),
                (3, 0) => {
                    piece.kind = Reader { bytes: v, at: 0 }.varint()? as i32;
                }
                _ => {}
            }
        }
        out.push(piece);
    }
    if out.is_empty() {
        return Err("no pieces: not a SentencePiece model".into());
    }
    Ok(out)
}
