//! An axis's value text as A1111's X/Y/Z plot reads it: a CSV row (Python's `csv.reader`, each
//! field stripped), and on int / float axes the range forms `1-5`, `1-5 (+2)` and `1-10 [5]`.

use std::sync::LazyLock;

use regex::Regex;

use super::XyzError;

/// `1-5` or `1-5 (+2)`: every step from the start up to and including the end.
static RANGE: LazyLock<Regex> =
    LazyLock::new(|| re(r"([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?"));
/// `1-10 [5]`: that many values spread evenly (numpy's linspace), truncated for ints.
static RANGE_COUNT: LazyLock<Regex> =
    LazyLock::new(|| re(r"([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*\])?"));
static RANGE_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"([+-]?\s*\d+(?:\.\d*)?)\s*-\s*([+-]?\s*\d+(?:\.\d*)?)(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?")
});
static RANGE_COUNT_FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"([+-]?\s*\d+(?:\.\d*)?)\s*-\s*([+-]?\s*\d+(?:\.\d*)?)(?:\s*\[(\d+(?:\.\d*)?)\s*\])?")
});

/// Whole-string match, as Python's `fullmatch`, with the surrounding blanks A1111 allows.
fn re(body: &str) -> Regex {
    Regex::new(&format!(r"^\s*{body}\s*$"))
        .unwrap_or_else(|e| unreachable!("constant pattern compiles: {e}"))
}

/// More values than this on one axis is a mistake (`1-100000000`), refused before allocating.
pub const MAX_VALUES: usize = 10_000;

/// The fields of A1111's `csv_string_to_list_strip`: Python's default CSV dialect (a `"` opens a
/// quoted field only at a field's start, `""` inside one is a quote), rows chained, each field
/// stripped.
pub fn csv_fields(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut field = String::new();
        let mut chars = line.chars().peekable();
        let mut at_start = true;
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if quoted {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        quoted = false;
                    }
                } else {
                    field.push(c);
                }
            } else if c == '"' && at_start {
                quoted = true;
                at_start = false;
            } else if c == ',' {
                out.push(field.trim().to_string());
                field.clear();
                at_start = true;
            } else {
                field.push(c);
                at_start = false;
            }
        }
        out.push(field.trim().to_string());
    }
    out
}

fn int(axis: &str, text: &str) -> Result<i64, XyzError> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    t.parse::<i64>()
        .map_err(|_| XyzError::value(axis, text, "not a whole number"))
}

fn float(axis: &str, text: &str) -> Result<f64, XyzError> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(XyzError::value(axis, text, "not a number")),
    }
}

fn check_count(axis: &str, text: &str, n: usize) -> Result<(), XyzError> {
    if n > MAX_VALUES {
        return Err(XyzError::value(
            axis,
            text,
            &format!("gives {n} values, more than {MAX_VALUES}"),
        ));
    }
    Ok(())
}

/// numpy's `linspace(start, stop, num)`: `start + i * step`, the last value exactly `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// Integers: a value, `a-b` (`range(a, b + 1)`), `a-b (+s)` (`range(a, b + 1, s)`, so with a
/// negative step the end is still `b + 1`, as in A1111) or `a-b [n]` (linspace truncated).
pub fn parse_ints(axis: &str, text: &str) -> Result<Vec<i64>, XyzError> {
    let mut out = Vec::new();
    for field in csv_fields(text) {
        if let Some(m) = RANGE.captures(&field) {
            let start = int(axis, &m[1])?;
            let end = int(axis, &m[2])?.saturating_add(1);
            let step = match m.get(3) {
                Some(s) => int(axis, s.as_str())?,
                None => 1,
            };
            if step == 0 {
                return Err(XyzError::value(axis, &field, "a range's step cannot be 0"));
            }
            // i128: no overflow whatever the user typed.
            let (span, stride) = if step > 0 {
                (i128::from(end) - i128::from(start), i128::from(step))
            } else {
                (i128::from(start) - i128::from(end), -i128::from(step))
            };
            let n = (span.max(0) + stride - 1) / stride;
            check_count(
                axis,
                &field,
                out.len().saturating_add(n.min(1 << 40) as usize),
            )?;
            let n = n as usize;
            out.extend((0..n as i64).map(|i| start + i * step));
        } else if let Some(m) = RANGE_COUNT.captures(&field) {
            let start = int(axis, &m[1])?;
            let end = int(axis, &m[2])?;
            let num = match m.get(3) {
                Some(s) => int(axis, s.as_str())? as usize,
                None => 1,
            };
            check_count(axis, &field, out.len() + num)?;
            // Python's int() of a float truncates toward zero.
            out.extend(
                linspace(start as f64, end as f64, num)
                    .into_iter()
                    .map(|v| v.trunc() as i64),
            );
        } else {
            out.push(int(axis, &field)?);
            check_count(axis, text, out.len())?;
        }
    }
    Ok(out)
}

/// Numbers: a value, `a-b (+s)` (numpy's `arange(a, b + s, s)`, step 1 by default) or `a-b [n]`
/// (linspace).
pub fn parse_floats(axis: &str, text: &str) -> Result<Vec<f64>, XyzError> {
    let mut out = Vec::new();
    for field in csv_fields(text) {
        if let Some(m) = RANGE_FLOAT.captures(&field) {
            let start = float(axis, &m[1])?;
            let end = float(axis, &m[2])?;
            let step = match m.get(3) {
                Some(s) => float(axis, s.as_str())?,
                None => 1.0,
            };
            if step == 0.0 {
                return Err(XyzError::value(axis, &field, "a range's step cannot be 0"));
            }
            let n = ((end + step - start) / step).ceil().max(0.0);
            check_count(axis, &field, out.len().saturating_add(n.min(1e9) as usize))?;
            // numpy fills with the delta of its first two values, not the step itself.
            let delta = (start + step) - start;
            out.extend((0..n as usize).map(|i| start + i as f64 * delta));
        } else if let Some(m) = RANGE_COUNT_FLOAT.captures(&field) {
            let start = float(axis, &m[1])?;
            let end = float(axis, &m[2])?;
            let num = match m.get(3) {
                // A1111 reads the count with int(), which refuses "2.5".
                Some(s) => int(axis, s.as_str())? as usize,
                None => 1,
            };
            check_count(axis, &field, out.len() + num)?;
            out.extend(linspace(start, end, num));
        } else {
            out.push(float(axis, &field)?);
            check_count(axis, text, out.len())?;
        }
    }
    Ok(out)
}

/// Python's `repr` of a float after A1111's `round(x, 8)`: `7.0`, `0.35`, `1e-05`.
pub fn format_float(x: f64) -> String {
    let r = (x * 1e8).round() / 1e8;
    let r = if r == 0.0 { 0.0 } else { r };
    let a = r.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python's exponent form: 1e-05, 1.5e+16.
        let s = format!("{r:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let s = r.to_string();
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_python() {
        assert_eq!(csv_fields("a, b ,c"), ["a", "b", "c"]);
        assert_eq!(csv_fields(r#""x, y",z"#), ["x, y", "z"]);
        assert_eq!(csv_fields(r#""say ""hi""",b"#), [r#"say "hi""#, "b"]);
        // A quote after a blank is literal (no skipinitialspace).
        assert_eq!(csv_fields(r#"a, "b,c""#), ["a", "\"b", "c\""]);
        assert_eq!(csv_fields("1,,2"), ["1", "", "2"]);
        assert!(csv_fields("").is_empty());
    }

    #[test]
    fn int_ranges() {
        assert_eq!(parse_ints("Steps", "10,20, 30").unwrap(), [10, 20, 30]);
        assert_eq!(parse_ints("Steps", "1-5").unwrap(), [1, 2, 3, 4, 5]);
        assert_eq!(parse_ints("Steps", "1-5 (+2)").unwrap(), [1, 3, 5]);
        assert_eq!(parse_ints("Steps", "1-10 [5]").unwrap(), [1, 3, 5, 7, 10]);
        assert_eq!(parse_ints("Seed", "-1").unwrap(), [-1]);
        assert_eq!(parse_ints("Seed", "-5--3").unwrap(), [-5, -4, -3]);
        // A1111's end + 1 also applies to a falling range: 10, 8, 6, 4 and not 2.
        assert_eq!(parse_ints("Steps", "10-2 (-2)").unwrap(), [10, 8, 6, 4]);
        assert_eq!(parse_ints("Steps", "5-1").unwrap(), Vec::<i64>::new());
        assert_eq!(parse_ints("Steps", "3, 1-2, 7").unwrap(), [3, 1, 2, 7]);
    }

    #[test]
    fn float_ranges() {
        assert_eq!(parse_floats("CFG Scale", "5,7.5").unwrap(), [5.0, 7.5]);
        assert_eq!(parse_floats("CFG Scale", "1-3").unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(
            parse_floats("CFG Scale", "1-2 (+0.5)").unwrap(),
            [1.0, 1.5, 2.0]
        );
        assert_eq!(
            parse_floats("Denoising", "0.25-1 [4]").unwrap(),
            [0.25, 0.5, 0.75, 1.0]
        );
        // numpy: arange(0, 0.3 + 0.1, 0.1) has 4 values, the last 0.30000000000000004.
        let v = parse_floats("Denoising", "0-0.3 (+0.1)").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(format_float(v[3]), "0.3");
    }

    #[test]
    fn bad_values_name_the_axis_and_value() {
        let e = parse_ints("Steps", "10,twenty").unwrap_err().to_string();
        assert!(e.contains("Steps") && e.contains("\"twenty\""), "{e}");
        let e = parse_floats("CFG Scale", "7,x").unwrap_err().to_string();
        assert!(e.contains("CFG Scale") && e.contains("\"x\""), "{e}");
        let e = parse_ints("Steps", "1-5 (+0)").unwrap_err().to_string();
        assert!(e.contains("step cannot be 0"), "{e}");
        let e = parse_ints("Steps", "1-100000000").unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        assert!(parse_ints("Steps", "1,,2").is_err());
        assert!(parse_floats("CFG Scale", "7.5.1").is_err());
    }

    #[test]
    fn floats_print_as_python() {
        assert_eq!(format_float(7.0), "7.0");
        assert_eq!(format_float(0.35), "0.35");
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(-2.5), "-2.5");
    }
}
