//! A1111's attention/emphasis syntax (stable-diffusion-webui modules/prompt_parser.py,
//! `parse_prompt_attention`), reimplemented to give the same segments and weights.

use std::sync::OnceLock;

use regex::Regex;

use super::PromptError;

/// A run of prompt text with one emphasis weight, or a `BREAK` marker.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub text: String,
    pub weight: f32,
    /// A1111 marks `BREAK` as the text "BREAK" with weight exactly -1 and tests both; the flag is
    /// computed from the f64 weight so that f32 rounding cannot create or hide a break.
    pub is_break: bool,
}

impl Segment {
    /// Plain text with a weight; what A1111 uses for the whole line when emphasis is off.
    pub fn text(text: impl Into<String>, weight: f32) -> Self {
        Self {
            text: text.into(),
            weight,
            is_break: false,
        }
    }

    /// A forced chunk boundary.
    pub fn break_marker() -> Self {
        Self {
            text: "BREAK".into(),
            weight: -1.0,
            is_break: true,
        }
    }
}

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

// Python's `\s` (str.isspace) also matches U+001C..U+001F, which Unicode's White_Space lacks;
// the class below adds them so both patterns see the same whitespace.
fn attention_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Alternatives in A1111's order (first match wins, as in Python): escapes, a lone
        // backslash, openers, `:weight)`, closers, plain text, a lone colon.
        Regex::new(concat!(
            r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|",
            r":[\s\x1c-\x1f]*([+-]?[.\d]+)[\s\x1c-\x1f]*\)|",
            r"\)|\]|[^\\()\[\]:]+|:"
        ))
        .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
    })
}

fn break_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?s)[\s\x1c-\x1f]*\bBREAK\b[\s\x1c-\x1f]*")
            .unwrap_or_else(|e| unreachable!("constant pattern: {e}"))
    })
}

/// Splits `prompt` into weighted segments as A1111 does:
/// `(a)` x1.1, `[a]` /1.1, `(a:1.5)` sets a factor of 1.5 (nesting multiplies), `\(` `\)` `\[`
/// `\]` `\\` are literals, a closer without an opener is plain text, openers never closed apply
/// to the rest of the prompt, `BREAK` (a whole word) becomes a marker, and neighbouring segments
/// with equal weights merge. Weights are computed in f64 like Python's floats so that merging
/// sees the same equalities.
///
/// Errors where A1111 raises: a weight such as `1.2.3` or `.` that Python's `float()` rejects.
/// Known differences from Python's `re`, only for unusual characters: Python also accepts
/// non-ASCII decimal digits in a weight (this parser rejects them), and its `\b` around `BREAK`
/// uses `str.isalnum`, which differs from Unicode's word class on combining marks.
pub fn parse_emphasis(prompt: &str) -> Result<Vec<Segment>, PromptError> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();

    fn scale(res: &mut [(String, f64)], from: usize, factor: f64) {
        for seg in &mut res[from..] {
            seg.1 *= factor;
        }
    }

    for caps in attention_re().captures_iter(prompt) {
        let Some(whole) = caps.get(0) else { continue };
        let piece = whole.as_str();
        if let Some(literal) = piece.strip_prefix('\\') {
            res.push((literal.to_string(), 1.0));
        } else if piece == "(" {
            round.push(res.len());
        } else if piece == "[" {
            square.push(res.len());
        } else if let (Some(w), Some(&start)) = (caps.get(1), round.last()) {
            let factor: f64 = w.as_str().parse().map_err(|_| PromptError::BadWeight {
                weight: w.as_str().to_string(),
            })?;
            round.pop();
            scale(&mut res, start, factor);
        } else if let (")", Some(start)) = (piece, round.last().copied()) {
            round.pop();
            scale(&mut res, start, ROUND);
        } else if let ("]", Some(start)) = (piece, square.last().copied()) {
            square.pop();
            scale(&mut res, start, SQUARE);
        } else {
            for (i, part) in break_re().split(piece).enumerate() {
                if i > 0 {
                    res.push(("BREAK".into(), -1.0));
                }
                res.push((part.to_string(), 1.0));
            }
        }
    }
    for start in round {
        scale(&mut res, start, ROUND);
    }
    for start in square {
        scale(&mut res, start, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }

    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (text, weight) in res {
        match merged.last_mut() {
            Some(last) if last.1 == weight => last.0.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    Ok(merged
        .into_iter()
        .map(|(text, weight)| Segment {
            is_break: text == "BREAK" && weight == -1.0,
            text,
            weight: weight as f32,
        })
        .collect())
}
