//! A fast path for the YAML manifests are made of: block mappings and
//! sequences, flow collections (JSON included), one-line scalars, comments
//! and `---`. serde-saphyr took most of a large dry run's time; this reads
//! the same text over ten times faster.
//!
//! It gives exactly what serde-saphyr gives, or gives up (`None`) and
//! serde-saphyr reads the file: on anchors, aliases, tags, block and
//! multi-line scalars, floats, numbers in other notations, complex keys,
//! duplicate keys, tabs, non-ASCII text, any indentation or spelling it is
//! not sure of, and well before serde-saphyr's limits. So every error
//! still comes from serde-saphyr, with its lines and columns.

use serde_json::{Map, Number, Value};

/// Far below serde-saphyr's budget (64 levels, 250,000 nodes, 1,024
/// documents, 1,024 bytes of key), so that whatever it would refuse is
/// left to it.
const MAX_DEPTH: usize = 32;
const MAX_ENTRIES: usize = 50_000;
const MAX_DOCUMENTS: usize = 512;
const MAX_KEY: usize = 256;

/// The documents of a YAML stream, empty ones left out as serde-saphyr
/// leaves them, each with the line (1-based) its root node starts on; or
/// `None` when the text is not in the subset this reads.
pub fn documents(text: &str) -> Option<Vec<(usize, Value)>> {
    // Printable ASCII and newlines only: no tab, no carriage return, none
    // of the characters YAML forbids or reads as line breaks.
    if !text
        .bytes()
        .all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    Reader {
        text: text.as_bytes(),
        pos: 0,
        line: 1,
        entries: 0,
    }
    .documents()
}

/// The line after a node: where the node's caller goes on.
#[derive(Clone, Copy)]
enum Next {
    End,
    /// A `---` line.
    Marker,
    /// A line with content at this indentation; `pos` is at the content.
    Content(usize),
}

struct Reader<'a> {
    text: &'a [u8],
    pos: usize,
    /// The line of `pos`, 1-based.
    line: usize,
    /// Mapping entries and sequence items so far.
    entries: usize,
}

impl<'a> Reader<'a> {
    fn documents(&mut self) -> Option<Vec<(usize, Value)>> {
        let mut documents = Vec::new();
        let mut next = self.next_line()?;
        loop {
            match next {
                Next::End => return Some(documents),
                Next::Marker => {
                    self.end_of_line()?;
                    next = self.next_line()?;
                }
                Next::Content(indent) => {
                    if documents.len() == MAX_DOCUMENTS {
                        return None;
                    }
                    let line = self.line;
                    let (root, after) = if matches!(self.peek(), b'{' | b'[') {
                        let root = self.flow(0, 0)?;
                        self.end_of_line()?;
                        (root, self.next_line()?)
                    } else if self.at_key() {
                        self.block_mapping(indent, 0)?
                    } else {
                        // A sequence or a scalar: not an object, which
                        // serde-saphyr's reading makes clear.
                        return None;
                    };
                    documents.push((line, root));
                    if let Next::Content(_) = after {
                        return None;
                    }
                    next = after;
                }
            }
        }
    }

    fn peek(&self) -> u8 {
        self.peek_at(0)
    }

    /// The byte `offset` past `pos`; 0 (which `documents` refuses in the
    /// text) past the end.
    fn peek_at(&self, offset: usize) -> u8 {
        self.text.get(self.pos + offset).copied().unwrap_or(0)
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.pos;
        while self.peek() == b' ' {
            self.pos += 1;
        }
        self.pos - start
    }

    /// From the start of a line, past blank and comment lines, to the
    /// content of the next line that has some.
    fn next_line(&mut self) -> Option<Next> {
        loop {
            let start = self.pos;
            let indent = self.skip_spaces();
            match self.peek() {
                0 => return Some(Next::End),
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    continue;
                }
                b'#' => {
                    self.skip_comment();
                    continue;
                }
                _ => {}
            }
            if indent == 0 {
                let rest = &self.text[start..];
                let marker_end = matches!(rest.get(3), None | Some(b' ' | b'\n'));
                if rest.starts_with(b"---") && marker_end {
                    self.pos += 3;
                    return Some(Next::Marker);
                }
                // Document ends and directives.
                if rest.starts_with(b"...") || rest[0] == b'%' {
                    return None;
                }
            }
            return Some(Next::Content(indent));
        }
    }

    /// Past a comment to the start of the next line.
    fn skip_comment(&mut self) {
        while !matches!(self.peek(), 0 | b'\n') {
            self.pos += 1;
        }
        if self.peek() == b'\n' {
            self.pos += 1;
            self.line += 1;
        }
    }

    /// Past spaces and a comment to the start of the next line; `None` if
    /// anything else is left on this one.
    fn end_of_line(&mut self) -> Option<()> {
        self.skip_spaces();
        match self.peek() {
            0 => Some(()),
            // A comment needs a space before it.
            b'#' if self.text[self.pos - 1] != b' ' => None,
            b'\n' | b'#' => {
                self.skip_comment();
                Some(())
            }
            _ => None,
        }
    }

    fn count_entry(&mut self, depth: usize) -> Option<()> {
        self.entries += 1;
        (self.entries <= MAX_ENTRIES && depth <= MAX_DEPTH).then_some(())
    }

    fn at_dash_item(&self) -> bool {
        self.peek() == b'-' && matches!(self.peek_at(1), 0 | b' ' | b'\n')
    }

    /// Whether a block mapping's key starts here: a quoted or plain key,
    /// then `:` and a space or the end of the line.
    fn at_key(&self) -> bool {
        let mut end = self.pos;
        match self.peek() {
            quote @ (b'"' | b'\'') => {
                end += 1;
                loop {
                    match self.text.get(end) {
                        None | Some(b'\n') => return false,
                        Some(b'\\') if quote == b'"' => end += 2,
                        Some(&b) if b == quote => break,
                        Some(_) => end += 1,
                    }
                }
                end += 1;
            }
            _ => {
                while self.text.get(end).is_some_and(|&b| is_key_byte(b)) {
                    end += 1;
                }
                if end == self.pos {
                    return false;
                }
            }
        }
        self.text.get(end) == Some(&b':')
            && matches!(self.text.get(end + 1), None | Some(b' ' | b'\n'))
    }

    /// A block mapping's key, and its `:`.
    fn block_key(&mut self) -> Option<String> {
        let start = self.pos;
        let key = match self.peek() {
            b'"' => self.double_quoted()?,
            b'\'' => self.single_quoted()?,
            _ => {
                while is_key_byte(self.peek()) {
                    self.pos += 1;
                }
                plain_key(&self.text[start..self.pos])?
            }
        };
        let colon_ends = matches!(self.peek_at(1), 0 | b' ' | b'\n');
        if self.pos - start > MAX_KEY || self.peek() != b':' || !colon_ends {
            return None;
        }
        self.pos += 1;
        Some(key)
    }

    /// A block mapping whose keys are at column `indent`; `pos` is at the
    /// first key.
    fn block_mapping(&mut self, indent: usize, depth: usize) -> Option<(Value, Next)> {
        let mut map = Map::new();
        loop {
            self.count_entry(depth)?;
            let key = self.block_key()?;
            self.skip_spaces();
            let (value, next) = if matches!(self.peek(), 0 | b'\n' | b'#') {
                self.end_of_line()?;
                let next = self.next_line()?;
                self.block_value(indent, true, next, depth + 1)?
            } else {
                let value = self.inline_value(indent + 1, depth + 1)?;
                (value, self.next_line()?)
            };
            if map.insert(key, value).is_some() {
                return None;
            }
            match next {
                Next::Content(i) if i == indent => continue,
                Next::Content(i) if i > indent => return None,
                next => return Some((Value::Object(map), next)),
            }
        }
    }

    /// A block sequence whose dashes are at column `indent`; `pos` is at
    /// the first dash.
    fn block_sequence(&mut self, indent: usize, depth: usize) -> Option<(Value, Next)> {
        let mut items = Vec::new();
        loop {
            self.count_entry(depth)?;
            self.pos += 1;
            let spaces = self.skip_spaces();
            let (item, next) = if matches!(self.peek(), 0 | b'\n' | b'#') {
                self.end_of_line()?;
                let next = self.next_line()?;
                self.block_value(indent, false, next, depth + 1)?
            } else if self.at_dash_item() {
                return None;
            } else if self.at_key() {
                self.block_mapping(indent + 1 + spaces, depth + 1)?
            } else {
                let item = self.inline_value(indent + 1, depth + 1)?;
                (item, self.next_line()?)
            };
            items.push(item);
            match next {
                Next::Content(i) if i == indent && self.at_dash_item() => continue,
                Next::Content(i) if i > indent => return None,
                next => return Some((Value::Array(items), next)),
            }
        }
    }

    /// The value of a key or dash that ends its line: the block node on
    /// the lines below, or null. A mapping's value may be a sequence at the
    /// key's own column.
    fn block_value(
        &mut self,
        indent: usize,
        in_mapping: bool,
        next: Next,
        depth: usize,
    ) -> Option<(Value, Next)> {
        match next {
            Next::Content(i)
                if i > indent || (i == indent && in_mapping && self.at_dash_item()) =>
            {
                if self.at_dash_item() {
                    self.block_sequence(i, depth)
                } else if self.at_key() {
                    self.block_mapping(i, depth)
                } else {
                    None
                }
            }
            next => Some((Value::Null, next)),
        }
    }

    /// A value after `key: ` or `- `, to the end of its line. Lines that a
    /// flow collection goes on to must be indented by `min_indent` or more.
    fn inline_value(&mut self, min_indent: usize, depth: usize) -> Option<Value> {
        let value = match self.peek() {
            b'{' | b'[' => self.flow(min_indent, depth)?,
            b'"' => Value::String(self.double_quoted()?),
            b'\'' => Value::String(self.single_quoted()?),
            _ => {
                let start = self.pos;
                while !matches!(self.peek(), 0 | b'\n') && !self.at_comment() {
                    self.pos += 1;
                }
                let text = trim_end(&self.text[start..self.pos]);
                // `a: b: c` is an error, `a: b:` a key with no value.
                if text.windows(2).any(|w| w == b": ") || text.ends_with(b":") {
                    return None;
                }
                plain(text)?
            }
        };
        self.end_of_line()?;
        Some(value)
    }

    fn at_comment(&self) -> bool {
        self.peek() == b' ' && self.peek_at(1) == b'#'
    }

    /// A flow mapping or sequence, `pos` at its bracket.
    fn flow(&mut self, min_indent: usize, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let close = if self.peek() == b'{' { b'}' } else { b']' };
        self.pos += 1;
        self.flow_space(min_indent)?;
        let mut map = Map::new();
        let mut items = Vec::new();
        if self.peek() != close {
            loop {
                self.count_entry(depth)?;
                if close == b'}' {
                    let key = self.flow_key()?;
                    self.flow_space(min_indent)?;
                    let value = self.flow_value(min_indent, depth + 1)?;
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                } else {
                    items.push(self.flow_value(min_indent, depth + 1)?);
                }
                self.flow_space(min_indent)?;
                match self.peek() {
                    b',' => {
                        self.pos += 1;
                        self.flow_space(min_indent)?;
                        // A trailing comma.
                        if self.peek() == close {
                            return None;
                        }
                    }
                    b if b == close => break,
                    _ => return None,
                }
            }
        }
        self.pos += 1;
        Some(if close == b'}' {
            Value::Object(map)
        } else {
            Value::Array(items)
        })
    }

    /// Spaces, line breaks and comments inside a flow collection.
    fn flow_space(&mut self, min_indent: usize) -> Option<()> {
        loop {
            match self.peek() {
                b' ' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    let indent = self.skip_spaces();
                    let rest = &self.text[self.pos..];
                    let blank = matches!(self.peek(), 0 | b'\n' | b'#');
                    let marker = rest.starts_with(b"---") || rest.starts_with(b"...");
                    if !blank && (indent < min_indent || (indent == 0 && marker)) {
                        return None;
                    }
                }
                b'#' if matches!(self.text[self.pos - 1], b' ' | b'\n') => {
                    self.skip_comment_in_flow()
                }
                _ => return Some(()),
            }
        }
    }

    /// To the line break ending a comment, which `flow_space` then counts.
    fn skip_comment_in_flow(&mut self) {
        while !matches!(self.peek(), 0 | b'\n') {
            self.pos += 1;
        }
    }

    /// A flow mapping's key, and its `:`.
    fn flow_key(&mut self) -> Option<String> {
        let start = self.pos;
        let key = match self.peek() {
            b'"' => self.double_quoted()?,
            b'\'' => self.single_quoted()?,
            _ => plain_key(self.flow_plain())?,
        };
        // A value must follow: `{a}` and `{a: }` are left to serde-saphyr.
        let value_follows = match self.peek_at(1) {
            b' ' | b'\n' => true,
            b',' | b'}' | b']' | 0 => false,
            // JSON's `"a":1`.
            _ => key_is_quoted(self.text[start]),
        };
        if self.pos - start > MAX_KEY || self.peek() != b':' || !value_follows {
            return None;
        }
        self.pos += 1;
        Some(key)
    }

    fn flow_value(&mut self, min_indent: usize, depth: usize) -> Option<Value> {
        match self.peek() {
            b'{' | b'[' => self.flow(min_indent, depth),
            b'"' => self.double_quoted().map(Value::String),
            b'\'' => self.single_quoted().map(Value::String),
            _ => plain(self.flow_plain()),
        }
    }

    /// A plain scalar in a flow collection: up to a flow indicator, a `:`
    /// that ends a key, a comment or the end of the line.
    fn flow_plain(&mut self) -> &'a [u8] {
        let start = self.pos;
        loop {
            match self.peek() {
                0 | b'\n' | b',' | b'[' | b']' | b'{' | b'}' => break,
                b':' if matches!(self.peek_at(1), 0 | b' ' | b'\n' | b',' | b']' | b'}') => break,
                _ if self.at_comment() => break,
                _ => self.pos += 1,
            }
        }
        trim_end(&self.text[start..self.pos])
    }

    /// A double-quoted scalar on one line, with JSON's escapes.
    fn double_quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while !matches!(self.peek(), 0 | b'\n' | b'"' | b'\\') {
                self.pos += 1;
            }
            // The text is ASCII (see `documents`).
            out.push_str(std::str::from_utf8(&self.text[start..self.pos]).ok()?);
            match self.peek() {
                b'"' => {
                    self.pos += 1;
                    return Some(out);
                }
                b'\\' => {
                    let escaped = match self.peek_at(1) {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'u' => {
                            let hex = self.text.get(self.pos + 2..self.pos + 6)?;
                            let hex = std::str::from_utf8(hex).ok()?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return None;
                            }
                            self.pos += 4;
                            char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                        }
                        _ => return None,
                    };
                    out.push(escaped);
                    self.pos += 2;
                }
                // Multi-line.
                _ => return None,
            }
        }
    }

    /// A single-quoted scalar on one line.
    fn single_quoted(&mut self) -> Option<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while !matches!(self.peek(), 0 | b'\n' | b'\'') {
                self.pos += 1;
            }
            out.push_str(std::str::from_utf8(&self.text[start..self.pos]).ok()?);
            match (self.peek(), self.peek_at(1)) {
                (b'\'', b'\'') => {
                    out.push('\'');
                    self.pos += 2;
                }
                (b'\'', _) => {
                    self.pos += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }
}

fn key_is_quoted(first: u8) -> bool {
    matches!(first, b'"' | b'\'')
}

/// What plain keys are made of here: enough for Kubernetes' field names,
/// labels and annotations.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')
}

/// A plain key that serde-saphyr would read as a string, not as a number,
/// boolean or null (`1:`, `on:`).
fn plain_key(text: &[u8]) -> Option<String> {
    match plain(text)? {
        Value::String(key) if text.iter().all(|&b| is_key_byte(b)) => Some(key),
        _ => None,
    }
}

fn trim_end(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &text[..end]
}

/// What serde-saphyr makes of a plain scalar as a `serde_json::Value`, for
/// the spellings whose reading is certain: null, YAML 1.1 booleans (as
/// serde-saphyr reads them), decimal integers, and text that no number
/// spelling can be.
fn plain(text: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(text).ok()?;
    let bytes = text.as_bytes();
    let boolean = |words: [&str; 4]| words.iter().any(|w| text.eq_ignore_ascii_case(w));
    if matches!(text, "~" | "null" | "Null" | "NULL") {
        return Some(Value::Null);
    }
    if boolean(["true", "yes", "y", "on"]) {
        return Some(Value::Bool(true));
    }
    if boolean(["false", "no", "n", "off"]) {
        return Some(Value::Bool(false));
    }
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    // serde-saphyr's integers are made of digits and `_`, its floats of
    // digits, `.`, `e`, `E`, `+` and `-` (it parses them with Rust's
    // parser); a leading `0` can start a `0x`, `0o` or `0b` integer.
    let number_like = |b: &u8| b.is_ascii_digit() || b"._eE+-".contains(b);
    match bytes {
        [] => None,
        // Text, `inf`, `infinity` and `nan` included: serde-saphyr reads
        // only numbers that start with a digit as non-finite floats.
        [b'a'..=b'z' | b'A'..=b'Z', ..]
        | [b'-', b'a'..=b'z' | b'A'..=b'Z', ..]
        | [b'-', b'-', b'a'..=b'z' | b'A'..=b'Z', ..] => Some(Value::String(text.into())),
        [b'/', ..] => Some(Value::String(text.into())),
        [b'1'..=b'9', ..] if !bytes.iter().all(number_like) => Some(Value::String(text.into())),
        // Decimal integers, without the leading zeros that serde-saphyr
        // reads as floats.
        [b'0'] => Some(Value::Number(Number::from(0u64))),
        [b'1'..=b'9', ..] if digits(bytes) => text
            .parse::<u64>()
            .ok()
            .map(|n| Value::Number(Number::from(n))),
        [b'-', b'1'..=b'9', rest @ ..] if rest.is_empty() || digits(rest) => text
            .parse::<i64>()
            .ok()
            .map(|n| Value::Number(Number::from(n))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_saphyr::Spanned;
    use std::path::Path;

    fn saphyr(text: &str) -> Option<Vec<(usize, Value)>> {
        let documents: Vec<Spanned<Value>> = serde_saphyr::from_str_multiple(text).ok()?;
        Some(
            documents
                .into_iter()
                .map(|d| (d.referenced.line() as usize, d.value))
                .collect(),
        )
    }

    /// Whether the fast path read `text`; if it did, it must have read
    /// what serde-saphyr reads.
    fn read_alike(text: &str) -> bool {
        let Some(fast) = documents(text) else {
            return false;
        };
        assert_eq!(Some(fast), saphyr(text), "{text:?}");
        true
    }

    #[test]
    fn reads_what_manifests_are_made_of() {
        let typical = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/typical-pod.yaml"),
        )
        .unwrap();
        for text in [
            typical.as_str(),
            "a: 1\n",
            "a: 1",
            "",
            "# nothing\n",
            "---\n---\n",
            "---\n# comment\na: b\n---\n\n  c: d # comment\n",
            "--- # comment\na: b\n",
            "a:\n  b:\n    c: x\n  d: [1, -2, 0]\nz: ~\n",
            "a:\n- 1\n- x\nb:\n  - {c: d}\n  -\n  - y\n  -\n",
            "a:\n- b: 1\n  c:\n  - x\n-   d: 2\n    e: 3\n- f\n",
            "a:\n  # comment\n\nb: null\nc: Null\nd: NULL\ne:\n",
            "t: [true, True, yes, Y, on, ON, false, No, n, off]\n",
            "w: [inf, Infinity, nan, NaN, -inf, --nan]\n",
            "s: [nginx:1.27, /tmp, -Xmx512m, --port=8080, http://x:80/y, a#b, a b, 500m, 1.5Gi, 2.5m, 128Ki, 3c1f6a52-8a0e, 8080/TCP]\n",
            "i: [0, 7, 18446744073709551615, -9223372036854775808]\n",
            "q: [\"\", \"a \\\"b\\\" \\\\ \\/ \\n\\t\\r \\u00e9\", 'it''s', \"1\", 'true']\n",
            "\"quoted key\": 'x'\n'single': \"y\"\n",
            "f: {a: 1, \"b\": [x, {c: nginx:1.27}], 'd': e}\n",
            "f: {a: 1,\n    b: 2, # comment\n\n    c: 3}\n",
            "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"spec\": {\"x\": [1, 2, {}], \"y\": []}}",
            "{\n  \"a\":1,\n  \"b\":\"c\"\n}\n---\n[1,\n 2]\n",
            "\n\n  {\"a\": 1}\n",
            "a: b\n---\nc: d\n---\n---\ne: f\n",
            "  a: 1\n  b: 2\n",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: bare, labels: {app: web}}\nspec:\n  containers:\n    - {name: web, image: nginx:1.27, ports: [{containerPort: 8080}]}\n",
        ] {
            assert!(read_alike(text), "not read: {text:?}");
        }
    }

    #[test]
    fn leaves_the_rest_to_serde_saphyr() {
        for text in [
            // Anchors, aliases, tags, merge keys.
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "<<: {a: 1}\n",
            // Block and multi-line scalars.
            "a: |\n  x\n",
            "a: >-\n  x\n",
            "a: x\n  y\n",
            "- a\n  b\n",
            "a: \"x\n  y\"\n",
            "a:\n  x\n",
            // Numbers it does not spell.
            "a: 1.5\n",
            "a: 1e3\n",
            "a: 0x1F\n",
            "a: 0127\n",
            "a: 1_000\n",
            "a: -0\n",
            "a: +1\n",
            "a: .inf\n",
            "a: 18446744073709551616\n",
            "a: 10.0.0.1\n",
            "a: 0.5m\n",
            "a: 1E\n",
            // Keys that are not text.
            "1: a\n",
            "true: a\n",
            "null: a\n",
            "n: a\n",
            "? a\n: b\n",
            "a b: c\n",
            // Duplicates, empty values and trailing commas in flow.
            "a: 1\na: 2\n",
            "a: {b: 1, b: 2}\n",
            "a: {b: }\n",
            "a: {b}\n",
            "a: {b: 1, }\n",
            "a: [1, ]\n",
            "a: [b: c]\n",
            "a: {b:c}\n",
            // Errors.
            "a: b: c\n",
            "a:\n    b: 1\n  c: 2\n",
            "a: 1\n- b\n",
            "a: [1, 2\n",
            "a: \"x\"y\n",
            "a: 'x'#y\n",
            "a: {b: 1} c\n",
            "- - a\n",
            // Roots that are not mappings.
            "- a\n",
            "just text\n",
            "~\n",
            // Directives, document ends inside flow, odd characters.
            "%YAML 1.2\n---\na: 1\n",
            "[1,\n---\n]\n",
            "a:\tb\n",
            "a: b\r\n",
            "a: é\n",
            "a: \"\\x41\"\n",
            "a: \"\\ud800\"\n",
        ] {
            assert_eq!(documents(text), None, "{text:?}");
        }
    }

    /// Every manifest of the repository, with each of its bytes deleted,
    /// doubled, or preceded by a character YAML gives a meaning: what the
    /// fast path reads, serde-saphyr reads the same.
    #[test]
    fn agrees_with_serde_saphyr_on_edited_manifests() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut texts: Vec<String> = ["examples/agyn", "examples/agyn-workloads", "tests/data"]
            .iter()
            .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect();
        texts.push("apiVersion: v1\nkind: Pod\nmetadata: {name: b, labels: {app: web}}\nspec:\n  containers:\n    - {name: web, image: nginx:1.27, ports: [{containerPort: 8080}]}\n".into());
        texts.push(r#"{"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "args": ["-x", "1"]}]}}"#.into());
        let (mut read, mut edits) = (0, 0);
        for text in &texts {
            assert!(read_alike(text), "not read: {text}");
            let step = (text.len() / 200).max(1);
            for at in (0..text.len()).step_by(step) {
                let (before, after) = text.split_at(at);
                let mut variants = vec![
                    format!("{before}{}", &after[1..]),
                    format!("{before}{}{after}", &after[..1]),
                ];
                for c in [" ", "\n", ":", "#", "-", "\"", "'", "{", "]", ",", "0", "&"] {
                    variants.push(format!("{before}{c}{after}"));
                }
                for variant in variants {
                    edits += 1;
                    read += usize::from(read_alike(&variant));
                }
            }
        }
        // Many edits leave a manifest the fast path reads (about half): the
        // comparison above is not vacuous.
        assert!(read * 3 > edits, "{read} of {edits} read");
    }
}
