//! The lexical layer (deffile spec §1): lines as Go's `bufio.ScanLines` cuts them, the tokens
//! SingularityCE's scanner makes of them (the header, then one token per section line), its
//! 64 KiB buffer limit, and the few Go string functions whose Unicode behaviour the parser must
//! reproduce.

/// Go's `bufio.MaxScanTokenSize`: the scanner's buffer never grows past 64 KiB.
const MAX_SCAN_BUFFER_BYTES: usize = 64 * 1024;

/// One input line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line<'a> {
    /// The line without its `\n` and with one trailing `\r` dropped, as `bufio.ScanLines` gives it.
    pub text: &'a str,
    /// 1-based line number.
    pub number: usize,
    /// Byte offset of the line's first byte.
    pub start: usize,
    /// Byte offset just past the line's `\n`, or the input length for a last line without one.
    pub end: usize,
    /// Whether the line is terminated by `\n`.
    pub has_newline: bool,
    /// Whether the line's first whitespace-separated word starts with `%` (spec §1.3).
    pub is_section: bool,
}

impl Line<'_> {
    /// 1-based column of the first non-whitespace character (1 for a blank line).
    pub fn first_column(&self) -> usize {
        self.text.chars().take_while(|c| c.is_whitespace()).count() + 1
    }
}

/// Cuts `text` into lines. A final empty piece after the last `\n` is not a line.
pub(crate) fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let (raw, end, has_newline) = match text[start..].find('\n') {
            Some(i) => (&text[start..start + i], start + i + 1, true),
            None => (&text[start..], text.len(), false),
        };
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        lines.push(Line {
            text: line,
            number: lines.len() + 1,
            start,
            end,
            has_newline,
            // Go's `bufio.ScanWords` skips the same Unicode spaces as `char::is_whitespace`.
            is_section: line.trim_start().starts_with('%'),
        });
        start = end;
    }
    lines
}

/// A token: the lines `first..end`, either the header or one section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token {
    /// Index of the first line.
    pub first: usize,
    /// Index one past the last line.
    pub end: usize,
    /// Whether the token starts with a section line (otherwise it is the header).
    pub is_section: bool,
    /// Whether SingularityCE's scanner fails on this token with `token too long`.
    pub is_too_long: bool,
}

/// Cuts the lines into SingularityCE's tokens (`scanDefinitionFile`).
///
/// `is_too_long` reproduces the `bufio.Scanner` buffer limit: to emit a token the scanner must
/// hold it plus the complete section line that ends it (up to its `\n`), and a token that runs to
/// the end of input needs one byte of headroom because end of input is only seen on a read that
/// returns nothing. With the buffer capped at 64 KiB, a token fails when it needs more than that.
pub(crate) fn tokens(lines: &[Line<'_>], text_len: usize) -> Vec<Token> {
    let mut starts: Vec<usize> = Vec::new();
    if let Some(first) = lines.first()
        && !first.is_section
    {
        starts.push(0);
    }
    starts.extend(
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_section)
            .map(|(i, _)| i),
    );
    starts
        .iter()
        .enumerate()
        .map(|(k, &first)| {
            let end = starts.get(k + 1).copied().unwrap_or(lines.len());
            let token_start = lines[first].start;
            let is_too_long = match lines.get(end) {
                Some(next) if next.has_newline => next.end - token_start > MAX_SCAN_BUFFER_BYTES,
                _ => text_len - token_start >= MAX_SCAN_BUFFER_BYTES,
            };
            Token {
                first,
                end,
                is_section: lines[first].is_section,
                is_too_long,
            }
        })
        .collect()
}

/// The text of lines, each followed by `\n`, as the scanner re-emits them.
pub(crate) fn join_lines(lines: &[Line<'_>]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
    for line in lines {
        out.push_str(line.text);
        out.push('\n');
    }
    out
}

/// Go's `strings.ToLower`: simple (one-to-one) case mapping per character. Rust's mapping differs
/// only where it yields several characters, which for lower case is U+0130 alone.
pub(crate) fn go_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                _ if c == '\u{130}' => 'i',
                _ => c,
            }
        })
        .collect()
}

/// Whether `s` starts with `bootstrap:` as Go's `(?i)bootstrap:` matches it (Unicode simple case
/// folding, so `ſ`, U+017F, matches `s`).
pub(crate) fn starts_with_bootstrap(s: &str) -> bool {
    let mut chars = s.chars();
    "bootstrap:".chars().all(|p| match chars.next() {
        Some(c) => c.to_ascii_lowercase() == p || (p == 's' && c == '\u{17f}'),
        None => false,
    })
}

/// Go RE2's `\s`: ASCII only, and without `\v`.
fn is_re_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// Go RE2's `\w`.
fn is_re_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `[^\s"']`.
fn is_plain(b: u8) -> bool {
    !is_re_space(b) && b != b'"' && b != b'\''
}

/// The first two matches of SingularityCE's `%files` line tokenizer,
/// `([^\s"']*{{\s*\w+\s*}}*[^\s{}"']*)+|([^\s"']+|"([^"]*)"|'([^']*))`, with Go's leftmost-first
/// semantics (spec §3.4). Only two are ever used: source and destination.
pub(crate) fn files_line_tokens(line: &str) -> (Option<&str>, Option<&str>) {
    let bytes = line.as_bytes();
    let mut found: [Option<&str>; 2] = [None, None];
    let mut count = 0;
    let mut at = 0;
    while at < bytes.len() && count < 2 {
        match files_match_at(bytes, at) {
            Some(end) => {
                found[count] = Some(&line[at..end]);
                count += 1;
                at = end;
            }
            None => at += 1,
        }
    }
    (found[0], found[1])
}

/// End of the regex match starting exactly at `at`, if any. All delimiters are ASCII, so every
/// match starts and ends on a character boundary.
fn files_match_at(s: &[u8], at: usize) -> Option<usize> {
    // First alternative: one or more "template" pieces, each greedy.
    let mut end = at;
    while let Some(next) = template_piece(s, end) {
        end = next;
    }
    if end > at {
        return Some(end);
    }
    match s[at] {
        b'"' => s[at + 1..]
            .iter()
            .position(|&b| b == b'"')
            .map(|i| at + 1 + i + 1),
        b'\'' => Some(
            s[at + 1..]
                .iter()
                .position(|&b| b == b'\'')
                .map_or(s.len(), |i| at + 1 + i),
        ),
        b if is_plain(b) => Some(at + s[at..].iter().take_while(|&&b| is_plain(b)).count()),
        _ => None,
    }
}

/// One `[^\s"']*{{\s*\w+\s*}}*[^\s{}"']*` piece starting at `at`. The leading class is greedy and
/// contains `{`, so a backtracking engine tries the *last* `{{` of the run first.
fn template_piece(s: &[u8], at: usize) -> Option<usize> {
    let run_end = at + s[at..].iter().take_while(|&&b| is_plain(b)).count();
    (at..run_end.saturating_sub(1))
        .rev()
        .filter(|&p| s[p] == b'{' && s[p + 1] == b'{')
        .find_map(|p| placeholder_tail(s, p + 2))
}

/// `\s*\w+\s*}}*[^\s{}"']*` from `at`.
fn placeholder_tail(s: &[u8], mut at: usize) -> Option<usize> {
    let skip = |at: usize, f: fn(u8) -> bool| at + s[at..].iter().take_while(|&&b| f(b)).count();
    at = skip(at, is_re_space);
    let word_end = skip(at, is_re_word);
    if word_end == at {
        return None;
    }
    at = skip(word_end, is_re_space);
    if s.get(at) != Some(&b'}') {
        return None;
    }
    at = skip(at, |b| b == b'}');
    Some(skip(at, |b| is_plain(b) && b != b'{' && b != b'}'))
}

/// A `{{ name }}` placeholder found by SingularityCE's `{{\s*(\w+)\s*}}` (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placeholder<'a> {
    /// Byte offset of the first `{`.
    pub start: usize,
    /// Byte offset just past the last `}`.
    pub end: usize,
    /// The variable name.
    pub name: &'a str,
}

/// Every non-overlapping placeholder in `text`, left to right. Each part of the regex is
/// deterministic (`\s` and `\w` are disjoint and exclude `}`), so a failed try at one `{` can
/// only be followed by a try at the next byte.
pub(crate) fn placeholders(text: &str) -> Vec<Placeholder<'_>> {
    let s = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("{{") {
        let start = at + i;
        let mut p = start + 2;
        while p < s.len() && is_re_space(s[p]) {
            p += 1;
        }
        let name_start = p;
        while p < s.len() && is_re_word(s[p]) {
            p += 1;
        }
        let name_end = p;
        while p < s.len() && is_re_space(s[p]) {
            p += 1;
        }
        if name_end > name_start && s[p..].starts_with(b"}}") {
            out.push(Placeholder {
                start,
                end: p + 2,
                name: &text[name_start..name_end],
            });
            at = p + 2;
        } else {
            at = start + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES_RE: &str = r#"([^\t\n\f\r "']*\{\{[\t\n\f\r ]*[0-9A-Za-z_]+[\t\n\f\r ]*\}\}*[^\t\n\f\r {}"']*)+|([^\t\n\f\r "']+|"([^"]*)"|'([^']*))"#;

    /// A small deterministic generator, so the differential tests need no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn string(&mut self, alphabet: &[&str], max_len: u64) -> String {
            let len = self.next() % max_len;
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn files_tokenizer_agrees_with_the_regex() {
        let re = regex::Regex::new(FILES_RE).unwrap();
        let alphabet = [
            "{", "}", "{{", "}}", " ", "\t", "\u{b}", "\"", "'", "a", "_", "9", "-", "/", "é", "#",
        ];
        let mut rng = Lcg(7);
        for _ in 0..200_000 {
            let line = rng.string(&alphabet, 14);
            let expected: Vec<&str> = re.find_iter(&line).take(2).map(|m| m.as_str()).collect();
            let (a, b) = files_line_tokens(&line);
            let got: Vec<&str> = a.into_iter().chain(b).collect();
            assert_eq!(got, expected, "line {line:?}");
        }
    }

    #[test]
    fn placeholders_agree_with_the_regex() {
        let re = regex::Regex::new(r"\{\{[\t\n\f\r ]*([0-9A-Za-z_]+)[\t\n\f\r ]*\}\}").unwrap();
        let alphabet = [
            "{", "}", "{{", "}}", " ", "\n", "\u{b}", "a", "B_1", "-", "é",
        ];
        let mut rng = Lcg(11);
        for _ in 0..200_000 {
            let text = rng.string(&alphabet, 16);
            let expected: Vec<(usize, usize, &str)> = re
                .captures_iter(&text)
                .map(|c| {
                    let m = c.get(0).unwrap();
                    (m.start(), m.end(), c.get(1).unwrap().as_str())
                })
                .collect();
            let got: Vec<(usize, usize, &str)> = placeholders(&text)
                .into_iter()
                .map(|p| (p.start, p.end, p.name))
                .collect();
            assert_eq!(got, expected, "text {text:?}");
        }
    }

    #[test]
    fn bootstrap_prefix_folds_like_go() {
        let re = regex::Regex::new(r"(?i)\Abootstrap:").unwrap();
        for s in [
            "Bootstrap:",
            "BOOTSTRAP: docker",
            "bootſtrap:",
            "bootstrap :",
            " bootstrap:",
            "bootstra",
            "boot\u{212a}",
        ] {
            assert_eq!(starts_with_bootstrap(s), re.is_match(s), "{s:?}");
        }
    }

    #[test]
    fn lines_drop_one_cr_and_keep_the_unterminated_last_line() {
        let lines = split_lines("a\r\r\n %b\r\nc");
        let texts: Vec<&str> = lines.iter().map(|l| l.text).collect();
        assert_eq!(texts, ["a\r", " %b", "c"]);
        assert!(lines[1].is_section);
        assert!(!lines[2].has_newline);
        assert!(split_lines("").is_empty());
        assert_eq!(split_lines("x\n").len(), 1);
    }

    #[test]
    fn token_limit_matches_the_go_scanner_boundaries() {
        // A token that runs to the end of input fails from exactly 64 KiB on.
        let fits = format!("%post\n{}\n", "x".repeat(MAX_SCAN_BUFFER_BYTES - 8));
        assert_eq!(fits.len(), MAX_SCAN_BUFFER_BYTES - 1);
        let lines = split_lines(&fits);
        assert!(!tokens(&lines, fits.len())[0].is_too_long);
        let fails = format!("{fits}y");
        let lines = split_lines(&fails);
        assert!(tokens(&lines, fails.len())[0].is_too_long);
        // A token ended by a section line may fill the whole buffer, that line included.
        let body = "x".repeat(MAX_SCAN_BUFFER_BYTES - "%post\n\n%test\n".len());
        let fits = format!("%post\n{body}\n%test\nmore");
        assert_eq!(fits.len() - "more".len(), MAX_SCAN_BUFFER_BYTES);
        let lines = split_lines(&fits);
        assert!(!tokens(&lines, fits.len())[0].is_too_long);
        let fails = format!("%post\n{body}x\n%test\nmore");
        let lines = split_lines(&fails);
        assert!(tokens(&lines, fails.len())[0].is_too_long);
    }

    #[test]
    fn go_lower_maps_one_to_one() {
        assert_eq!(go_lower("RunScript"), "runscript");
        assert_eq!(go_lower("\u{130}X"), "ix");
        assert_eq!(go_lower("ΣΑΣ"), "σασ");
    }
}
