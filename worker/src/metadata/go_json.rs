//! JSON bytes as Go's `encoding/json` writes them, for files stock Singularity tools compare or
//! show as they are (`labels.json`, `inspect-metadata.json`).
//!
//! Two differences from serde_json matter: Go escapes `<`, `>` and `&` (HTML safety) and the line
//! separators U+2028 and U+2029, and `MarshalIndent` indents with the given string. Map keys come
//! out sorted because callers use `BTreeMap`, as Go sorts map keys.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

/// A formatter that escapes what Go escapes, around an inner serde_json formatter.
struct GoEscaping<F>(F);

impl<F: Formatter> Formatter for GoEscaping<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (index, ch) in fragment.char_indices() {
            let escape = match ch {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..index])?;
            writer.write_all(escape.as_bytes())?;
            start = index + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    // Everything else as the inner formatter does it.
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

fn write<T: Serialize + ?Sized, F: Formatter>(value: &T, formatter: F) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoEscaping(formatter));
    value
        .serialize(&mut serializer)
        .expect("metadata types serialize to memory without error");
    out
}

/// `json.Marshal(value)`: compact, Go's escaping, no trailing newline.
pub fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    write(value, CompactFormatter)
}

/// `json.MarshalIndent(value, "", indent)`: Go's escaping, no trailing newline.
pub fn to_go_json_indented<T: Serialize + ?Sized>(value: &T, indent: &str) -> Vec<u8> {
    write(value, PrettyFormatter::with_indent(indent.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn escapes_what_go_escapes() {
        let text = "a<b>&c\u{2028}d\"e\n";
        assert_eq!(
            to_go_json(text),
            br#""a\u003cb\u003e\u0026c\u2028d\"e\n""#.to_vec()
        );
    }

    #[test]
    fn indents_like_marshal_indent_with_sorted_keys() {
        let mut labels = BTreeMap::new();
        labels.insert("z", "1");
        labels.insert("a", "<2>");
        assert_eq!(
            String::from_utf8(to_go_json_indented(&labels, "\t")).unwrap(),
            "{\n\t\"a\": \"\\u003c2\\u003e\",\n\t\"z\": \"1\"\n}"
        );
        let empty: BTreeMap<String, String> = BTreeMap::new();
        assert_eq!(to_go_json_indented(&empty, "\t"), b"{}".to_vec());
    }
}
