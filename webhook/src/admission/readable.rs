//! Whether the host can read an object that serde_json accepted as a
//! `RawValue`. A `RawValue` only checks the syntax: it takes numbers that
//! overflow an `f64` (`1e400`) and nesting deeper than serde_json's
//! recursion limit, which a `Value` (the host's diff, a template cut out of
//! a workload) then refuses. A Pod goes to the policies unparsed, so this
//! scan is what tells the host that it could not read the object if it had
//! to: about 5 µs over the typical 5 KB pod on a 2-core machine, where a
//! `Value` parse of it costs about 18.

/// Deeper than any Kubernetes object, and below serde_json's limit of 128.
pub const MAX_DEPTH: usize = 100;

/// Checks JSON text that is known to be syntactically valid.
pub fn check(json: &str) -> Result<(), String> {
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string: an escaped quote does not end it.
                i += 1;
                loop {
                    match bytes[i.min(bytes.len())..]
                        .iter()
                        .position(|&b| b == b'"' || b == b'\\')
                    {
                        Some(at) if bytes[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                        None => return Ok(()),
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("it is nested deeper than {MAX_DEPTH} levels"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut plain = true;
                while i + 1 < bytes.len() {
                    match bytes[i + 1] {
                        b'0'..=b'9' => {}
                        b'.' | b'e' | b'E' | b'+' | b'-' => plain = false,
                        _ => break,
                    }
                    i += 1;
                }
                let number = &json[start..=i];
                // Up to 18 digits fit an i64: only longer integers and
                // fractions or exponents, read as f64 by serde_json, can
                // be out of range.
                let readable = (plain && number.len() <= 18)
                    || number.parse::<i64>().is_ok()
                    || number.parse::<u64>().is_ok()
                    || number.parse::<f64>().is_ok_and(f64::is_finite);
                if !readable {
                    return Err(format!("the number {} is out of range", clip(number)));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn clip(number: &str) -> &str {
    // Numbers are ASCII: any byte index is a character boundary.
    &number[..number.len().min(40)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever `check` accepts, serde_json reads as a `Value`; whatever
    /// it refuses, serde_json refuses too.
    #[test]
    fn agrees_with_serde_json() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for (json, readable) in [
            (
                r#"{"a": [1, -2, 3.5, 1e10, "1e400 in a string", "\"1e400"]}"#.to_string(),
                true,
            ),
            (r#"{"a": 1e400}"#.into(), false),
            (r#"{"a": -1e400}"#.into(), false),
            (r#"{"a": 1e308}"#.into(), true),
            (r#"{"a": 18446744073709551616}"#.into(), true),
            (format!(r#"{{"a": 1{}}}"#, "0".repeat(400)), false),
            (deep(MAX_DEPTH), true),
            (deep(200), false),
            (format!(r#"{{"a": "{}"}}"#, "[".repeat(300)), true),
        ] {
            assert_eq!(check(&json).is_ok(), readable, "{json:.80}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                readable,
                "serde_json disagrees on {json:.80}"
            );
        }
    }
}
