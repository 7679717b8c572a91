//! The pieces of Pod Security Admission's messages, written the way PSA
//! writes them: people grep their logs and docs for these exact strings.

use std::fmt::Write;

/// `"a", "b"`: each item in double quotes, separated by `, `. Items are not
/// escaped, as in PSA.
pub fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(item.as_ref());
        out.push('"');
    }
    out
}

/// `singular` for one, `plural` for any other count.
pub fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

/// `container "a"` or `containers "a", "b"`.
pub fn containers<S: AsRef<str>>(names: &[S]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// A string quoted as Go's `%q` (`strconv.Quote`) quotes it: PSA quotes
/// annotation values this way, and a value with a quote or a control
/// character must read the same as in PSA's message.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space. Rust has no general-category table in `std`; this
/// approximation excludes what matters in practice (other spaces, format
/// and private-use characters, unassigned surrogate ranges).
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_whitespace()
        || c.is_control()
        || matches!(c as u32,
            0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e
            | 0x200b..=0x200f | 0x202a..=0x202e | 0x2060..=0x206f
            | 0xfeff | 0xfff9..=0xfffb | 0xe000..=0xf8ff
            | 0xf0000..=0x10ffff | 0xe0001..=0xe007f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_pluralizes_like_psa() {
        assert_eq!(join_quote::<&str>(&[]), "");
        assert_eq!(join_quote(&["a", "b"]), r#""a", "b""#);
        assert_eq!(containers(&["app"]), r#"container "app""#);
        assert_eq!(containers(&["a", "b"]), r#"containers "a", "b""#);
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote("unconfined"), r#""unconfined""#);
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("\n\t\u{0}\u{7f}"), r#""\n\t\x00\x7f""#);
        assert_eq!(go_quote("é\u{a0}\u{200b}"), "\"é\\u00a0\\u200b\"");
        assert_eq!(go_quote("\u{f0000}"), r#""\U000f0000""#);
    }
}
