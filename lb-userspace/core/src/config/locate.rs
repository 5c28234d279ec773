//! Where things are in the file: field paths (`vip[1].backend[0].weight`) to lines, byte
//! spans to field paths, and serde's messages rewritten in the file's terms.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problem;

/// 1-based line and column (in characters) of byte `offset` of `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// One key or array element of the document.
struct Entry {
    path: String,
    /// The key (for `[[array]]` elements: the header), whose line a problem is reported at.
    anchor: Range<usize>,
    /// The value, when its span differs from the anchor's.
    value: Range<usize>,
}

/// The spans of every key and array element of one document.
pub(super) struct Locator {
    line_starts: Vec<usize>,
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
}

impl Locator {
    /// A locator of no text: every path has no line (a configuration with no file).
    pub(super) fn empty() -> Self {
        Locator {
            line_starts: vec![0],
            entries: Vec::new(),
            by_path: HashMap::new(),
        }
    }

    /// Parses `text` (syntax only) and indexes it.
    pub(super) fn new(text: &str) -> Result<Self, toml::de::Error> {
        let root = DeTable::parse(text)?;
        let mut locator = Locator {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            entries: Vec::new(),
            by_path: HashMap::new(),
        };
        locator.walk_table(root.get_ref(), "");
        Ok(locator)
    }

    fn walk_table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table.iter() {
            let path = join(prefix, key.get_ref());
            self.push(path.clone(), key.span(), value.span());
            self.walk_value(value, &path);
        }
    }

    fn walk_value(&mut self, value: &Spanned<DeValue<'_>>, path: &str) {
        match value.get_ref() {
            DeValue::Table(t) => self.walk_table(t, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.push(item_path.clone(), item.span(), item.span());
                    self.walk_value(item, &item_path);
                }
            }
            _ => {}
        }
    }

    fn push(&mut self, path: String, anchor: Range<usize>, value: Range<usize>) {
        self.by_path
            .entry(path.clone())
            .or_insert(self.entries.len());
        self.entries.push(Entry {
            path,
            anchor,
            value,
        });
    }

    fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The line of `path`, or of the nearest enclosing table or array element present in
    /// the file (a missing key is reported at its table's header).
    pub(super) fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(&i) = self.by_path.get(path) {
                return Some(self.line_of_offset(self.entries[i].anchor.start));
            }
            path = parent(path)?;
        }
    }

    /// Every path in the file, in document order.
    #[cfg(test)]
    pub(super) fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.path.as_str())
    }

    /// The path of the innermost key or element whose key or value covers `span`, or "" for
    /// the document itself.
    fn path_at(&self, span: &Range<usize>) -> &str {
        self.entries
            .iter()
            .flat_map(|e| [(e, &e.anchor), (e, &e.value)])
            .filter(|(_, s)| s.start <= span.start && span.end <= s.end.max(s.start + 1))
            .min_by_key(|(_, s)| s.end - s.start)
            .map_or("", |(e, _)| e.path.as_str())
    }

    /// A problem from a serde error of `toml::from_str` on the indexed text: the path of the
    /// offending key or value, and serde's message in the file's terms.
    pub(super) fn describe_serde_error(&self, e: &toml::de::Error) -> Problem {
        let (path, line) = match e.span() {
            Some(span) => (
                self.path_at(&span).to_owned(),
                Some(self.line_of_offset(span.start)),
            ),
            None => (String::new(), None),
        };
        let message = rewrite_serde_message(e.message(), &path);
        Problem {
            line,
            path,
            message,
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// The path one level up: `vip[1].backend[0]` → `vip[1].backend`, `vip[1].backend` →
/// `vip[1]`, `vip` → `` (the document), `` → none. Paths built by `validate` hold no
/// quoted keys, so splitting at the last `.` or `[` is exact for them.
pub(super) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        return path.rfind('[').map(|i| &path[..i]);
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

fn table_name(table: &str) -> String {
    if table.is_empty() {
        "the top level".to_owned()
    } else {
        format!("[{table}]")
    }
}

/// serde's words → the file's words.
fn rewrite_serde_message(message: &str, path: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, expected)) = rest.split_once('`')
    {
        let accepted: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let table = parent(path).unwrap_or("");
        let mut out = format!("unknown key `{key}` in {}", table_name(table));
        if let Some(best) = closest(key, &accepted) {
            out.push_str(&format!(" (did you mean `{best}`?)"));
        }
        if !accepted.is_empty() {
            out.push_str(&format!("; accepted keys: {}", accepted.join(", ")));
        }
        return out;
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        return format!(
            "wrong type: expected {}, found {found}",
            type_words(expected, path)
        );
    }
    message.to_owned()
}

fn type_words(expected: &str, path: &str) -> String {
    match expected {
        "i64" | "i32" | "u32" | "u64" | "u16" | "u8" => "an integer".to_owned(),
        "a string" => "a string".to_owned(),
        "a sequence" => {
            let header: String = path
                .split('[')
                .enumerate()
                .map(|(i, part)| {
                    // Drop every `n]` index: `vip[0].backend` → `vip.backend`.
                    if i == 0 {
                        part
                    } else {
                        part.split_once(']').map_or(part, |(_, rest)| rest)
                    }
                })
                .collect();
            let name = header.rsplit('.').next().unwrap_or(&header).to_owned();
            format!("an array of tables (write [[{header}]] sections, or {name} = [ ... ])")
        }
        e if e.starts_with("struct ") => "a table".to_owned(),
        e => e.to_owned(),
    }
}

/// The accepted key nearest to `key` (edit distance ≤ 2), for "did you mean".
fn closest<'a>(key: &str, accepted: &[&'a str]) -> Option<&'a str> {
    accepted
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
