//! JSON text exactly as Python's `json.dumps(value, ensure_ascii=False)` writes it: `", "` and
//! `": "` separators, keys in insertion order, non-ASCII kept, floats as Python's `repr`.
//! mistral-common builds tool prompts with it and transformers' `tojson` filter calls it, so the
//! prompt text only matches theirs when the separators and numbers are spelled the same way.

use serde_json::Value;

/// `json.dumps(value, ensure_ascii=False)`, or with `indent=n` when `indent` is given.
pub fn dumps(value: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write(&mut out, value, indent, 0);
    out
}

fn write(out: &mut String, value: &Value, indent: Option<usize>, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (_, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                separate(out, i, indent, depth + 1);
                write(out, item, indent, depth + 1);
            }
            close(out, indent, depth);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                separate(out, i, indent, depth + 1);
                write_str(out, key);
                out.push_str(": ");
                write(out, item, indent, depth + 1);
            }
            close(out, indent, depth);
            out.push('}');
        }
    }
}

/// Python writes `", "` between items, or `","` then a newline and indent when indenting.
fn separate(out: &mut String, index: usize, indent: Option<usize>, depth: usize) {
    match indent {
        None if index > 0 => out.push_str(", "),
        None => {}
        Some(n) => {
            if index > 0 {
                out.push(',');
            }
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    }
}

fn close(out: &mut String, indent: Option<usize>, depth: usize) {
    if let Some(n) = indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', n * depth));
    }
}

/// Python's escapes with ensure_ascii=False: quote, backslash, and control characters below
/// U+0020 (short forms where JSON has them); everything else, DEL included, as is.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust's `{:e}` gives the same
/// digits), fixed notation for decimal exponents -4..=15, else `d.ddde+XX`.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let (int, frac) = if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() > point {
                (digits[..point].to_string(), digits[point..].to_string())
            } else {
                (format!("{digits:0<point$}"), "0".to_string())
            }
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            ("0".to_string(), format!("{zeros}{digits}"))
        };
        format!("{sign}{int}.{frac}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{rest}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
            (100.0, "100.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456.789, "123456.789"),
            (-0.0, "-0.0"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    /// Values json.dumps wrote (tools/make_tool_fixtures.py): same text, floats above all.
    #[test]
    fn matches_python_json_dumps_on_the_fixture_values() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/llm/tokenizer/tool_goldens.json"
        );
        let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = json["pyjson"].as_array().unwrap();
        assert!(cases.len() > 20);
        for case in cases {
            assert_eq!(
                dumps(&case["value"], None),
                case["python"].as_str().unwrap(),
                "{}",
                case["value"]
            );
        }
    }

    #[test]
    fn separators_escapes_and_order_follow_python() {
        let v: Value =
            serde_json::from_str(r#"{"z": [1, 2.0, "é\n\u0001\"/"], "a": {}, "m": [], "b": null}"#)
                .unwrap();
        assert_eq!(
            dumps(&v, None),
            r#"{"z": [1, 2.0, "é\n\u0001\"/"], "a": {}, "m": [], "b": null}"#
        );
        assert_eq!(
            dumps(&serde_json::json!({"a": [1, true]}), Some(2)),
            "{\n  \"a\": [\n    1,\n    true\n  ]\n}"
        );
    }
}
