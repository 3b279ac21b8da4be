//! Nagios plugin output parsing: text, long output and performance data.
//!
//! The format follows the Nagios plugin development guidelines:
//!
//! ```text
//! TEXT OUTPUT | OPTIONAL PERFDATA
//! LONG TEXT LINE 1
//! LONG TEXT LINE 2 | PERFDATA LINE 2
//! PERFDATA LINE 3
//! ```
//!
//! The first line is the short output, optionally followed by `|` and
//! perfdata. Later lines are long output until a line contains `|`: the text
//! before it is still long output, everything after it (on that line and all
//! remaining lines) is perfdata.
//!
//! A perfdata item is `label=value[UOM];[warn];[crit];[min];[max]`. Labels may
//! be quoted with single quotes (`'disk /var'=5MB`), where `''` stands for one
//! quote. A value of `U` means undetermined. Plugin output is untrusted input:
//! a malformed item is reported in [`ParsedOutput::problems`] and skipped,
//! never fatal, and the parser never panics.

use crate::model::Perfdata;

/// Plugin output split into its parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ParsedOutput {
    /// The first line, without perfdata, trimmed.
    pub(crate) output: String,
    /// The further lines, without perfdata, joined with `\n`.
    pub(crate) long_output: String,
    /// Every perfdata item that parsed.
    pub(crate) perfdata: Vec<Perfdata>,
    /// One message per item that did not parse, e.g.
    /// `perfdata: cannot parse 'x=abc' (bad value)`.
    pub(crate) problems: Vec<String>,
}

impl ParsedOutput {
    /// The long output with one note line per problem appended, the form
    /// executors put into a result so that a person sees what was skipped.
    pub(crate) fn long_output_with_problems(&self) -> String {
        let mut long = self.long_output.clone();
        for p in &self.problems {
            if !long.is_empty() {
                long.push('\n');
            }
            long.push_str(p);
        }
        long
    }
}

/// Parses plugin output (see the module docs for the format).
pub(crate) fn parse_plugin_output(text: &str) -> ParsedOutput {
    let mut parsed = ParsedOutput::default();
    let mut lines = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l));

    let mut perf_text = String::new();
    if let Some(first) = lines.next() {
        match first.split_once('|') {
            Some((out, perf)) => {
                parsed.output = out.trim().to_string();
                perf_text.push_str(perf);
            }
            None => parsed.output = first.trim().to_string(),
        }
    }

    let mut long_lines: Vec<&str> = Vec::new();
    for line in lines.by_ref() {
        if let Some((long, perf)) = line.split_once('|') {
            long_lines.push(long.trim_end());
            perf_text.push('\n');
            perf_text.push_str(perf);
            break;
        }
        long_lines.push(line);
    }
    for line in lines {
        perf_text.push('\n');
        perf_text.push_str(line);
    }
    // Drop trailing empty lines (a plugin's final newline, or a `|` line with
    // no text before it).
    while long_lines.last().is_some_and(|l| l.trim().is_empty()) {
        long_lines.pop();
    }
    parsed.long_output = long_lines.join("\n");

    let (perfdata, problems) = parse_perfdata(&perf_text);
    parsed.perfdata = perfdata;
    parsed.problems = problems;
    parsed
}

/// Parses a perfdata string (whitespace-separated items), returning the items
/// that parsed and one problem message per item that did not.
pub(crate) fn parse_perfdata(text: &str) -> (Vec<Perfdata>, Vec<String>) {
    let mut items = Vec::new();
    let mut problems = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (raw, label, after_label, next) = match split_item(rest) {
            Ok(parts) => parts,
            Err((raw, reason, next)) => {
                problems.push(problem(raw, reason));
                rest = next;
                continue;
            }
        };
        rest = next;
        match parse_item(label, after_label) {
            Ok(item) => items.push(item),
            Err(reason) => problems.push(problem(raw, reason)),
        }
    }
    (items, problems)
}

fn problem(raw: &str, reason: &str) -> String {
    // Keep notes short even if a plugin prints a huge garbage token.
    let shown: String = if raw.chars().count() > 80 {
        let mut s: String = raw.chars().take(80).collect();
        s.push('…');
        s
    } else {
        raw.to_string()
    };
    format!("perfdata: cannot parse '{shown}' ({reason})")
}

type Split<'a> = (&'a str, String, &'a str, &'a str);
type SplitErr<'a> = (&'a str, &'static str, &'a str);

/// Splits the next item off `text` (which starts with a non-space):
/// returns (raw item text, unquoted label, text after `=`, remaining input).
fn split_item(text: &str) -> Result<Split<'_>, SplitErr<'_>> {
    if let Some(quoted) = text.strip_prefix('\'') {
        // Quoted label: runs to the next `'` not doubled.
        let mut label = String::new();
        let mut chars = quoted.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if let Some(&(_, '\'')) = chars.peek() {
                    chars.next();
                    label.push('\'');
                } else {
                    end = Some(i);
                    break;
                }
            } else {
                label.push(c);
            }
        }
        let Some(end) = end else {
            return Err((text.trim_end(), "unterminated quote", ""));
        };
        // 1 for the opening quote, 1 for the closing one.
        let after_quote = &text[end + 2..];
        let token_end = after_quote
            .find(char::is_whitespace)
            .unwrap_or(after_quote.len());
        let raw = &text[..end + 2 + token_end];
        let next = &after_quote[token_end..];
        match after_quote[..token_end].strip_prefix('=') {
            Some(value) => Ok((raw, label, value, next)),
            None => Err((raw, "missing '=' after label", next)),
        }
    } else {
        let token_end = text.find(char::is_whitespace).unwrap_or(text.len());
        let raw = &text[..token_end];
        let next = &text[token_end..];
        match raw.split_once('=') {
            Some((label, value)) => Ok((raw, label.to_string(), value, next)),
            None => Err((raw, "missing '='", next)),
        }
    }
}

fn parse_item(label: String, spec: &str) -> Result<Perfdata, &'static str> {
    if label.is_empty() {
        return Err("empty label");
    }
    let mut fields = spec.split(';');
    let value_field = fields.next().unwrap_or("");
    let (value, uom) = if value_field == "U" {
        (None, String::new())
    } else {
        let (num, uom) = split_number(value_field);
        if num.is_empty() {
            return Err("bad value");
        }
        let value = parse_f64(num).ok_or("bad value")?;
        if uom
            .chars()
            .any(|c| c.is_ascii_digit() || c == ';' || c == '=')
        {
            return Err("bad unit");
        }
        (Some(value), uom.to_string())
    };
    let warn = non_empty(fields.next());
    let crit = non_empty(fields.next());
    let min = match non_empty(fields.next()) {
        Some(s) => Some(parse_limit(&s, &uom).ok_or("bad min")?),
        None => None,
    };
    let max = match non_empty(fields.next()) {
        Some(s) => Some(parse_limit(&s, &uom).ok_or("bad max")?),
        None => None,
    };
    if fields.any(|f| !f.is_empty()) {
        return Err("too many fields");
    }
    Ok(Perfdata {
        label,
        value,
        uom,
        warn,
        crit,
        min,
        max,
    })
}

fn non_empty(field: Option<&str>) -> Option<String> {
    field.filter(|f| !f.is_empty()).map(str::to_string)
}

/// Min and max are plain numbers; some plugins repeat the unit, which we allow.
fn parse_limit(s: &str, uom: &str) -> Option<f64> {
    let s = if uom.is_empty() {
        s
    } else {
        s.strip_suffix(uom).unwrap_or(s)
    };
    parse_f64(s)
}

/// A finite number. Some plugins print a decimal comma (locale); accept it
/// when there is no dot.
fn parse_f64(s: &str) -> Option<f64> {
    let v: f64 = if s.contains(',') && !s.contains('.') {
        s.replacen(',', ".", 1).parse().ok()?
    } else {
        s.parse().ok()?
    };
    v.is_finite().then_some(v)
}

/// Splits `12.5MB` into (`12.5`, `MB`): the longest numeric prefix (sign,
/// digits, one decimal separator, exponent) and the rest.
fn split_number(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits_start = i;
    let mut seen_sep = false;
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' => i += 1,
            b'.' | b',' if !seen_sep => {
                seen_sep = true;
                i += 1;
            }
            _ => break,
        }
    }
    if i == digits_start || (i == digits_start + 1 && seen_sep) {
        return ("", s);
    }
    // Exponent: e/E, optional sign, at least one digit.
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_digits = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_digits {
            i = j;
        }
    }
    (&s[..i], &s[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pd(label: &str, value: Option<f64>, uom: &str) -> Perfdata {
        Perfdata {
            label: label.into(),
            value,
            uom: uom.into(),
            warn: None,
            crit: None,
            min: None,
            max: None,
        }
    }

    #[test]
    fn output_splitting_table() {
        // (input, output, long_output, perfdata labels, problem count)
        let cases: &[(&str, &str, &str, &[&str], usize)] = &[
            ("", "", "", &[], 0),
            ("OK", "OK", "", &[], 0),
            ("OK\n", "OK", "", &[], 0),
            ("OK - fine | a=1", "OK - fine", "", &["a"], 0),
            ("OK|a=1 b=2", "OK", "", &["a", "b"], 0),
            ("OK\nline 1\nline 2", "OK", "line 1\nline 2", &[], 0),
            (
                "OK | a=1\nline 1\nline 2 | b=2\nc=3\nd=4",
                "OK",
                "line 1\nline 2",
                &["a", "b", "c", "d"],
                0,
            ),
            ("OK\nlong\n| b=2\nc=3\n", "OK", "long", &["b", "c"], 0),
            ("OK\r\nlong\r\n", "OK", "long", &[], 0),
            ("DISK OK | x=abc y=1", "DISK OK", "", &["y"], 1),
            ("no perf |", "no perf", "", &[], 0),
            ("| a=1", "", "", &["a"], 0),
            ("OK\nafter | a=1 | b=2", "OK", "after", &["a", "b"], 1),
        ];
        for (input, output, long, labels, problems) in cases {
            let p = parse_plugin_output(input);
            assert_eq!(&*p.output, *output, "output of {input:?}");
            assert_eq!(&*p.long_output, *long, "long output of {input:?}");
            let got: Vec<&str> = p.perfdata.iter().map(|d| d.label.as_str()).collect();
            assert_eq!(got, *labels, "perfdata of {input:?}");
            assert_eq!(
                p.problems.len(),
                *problems,
                "problems of {input:?}: {:?}",
                p.problems
            );
        }
    }

    #[test]
    fn perfdata_items_table() {
        let full = Perfdata {
            label: "time".into(),
            value: Some(0.5),
            uom: "s".into(),
            warn: Some("1".into()),
            crit: Some("@2:3".into()),
            min: Some(0.0),
            max: Some(10.0),
        };
        let cases: Vec<(&str, Perfdata)> = vec![
            ("time=0.5s;1;@2:3;0;10", full),
            ("a=1", pd("a", Some(1.0), "")),
            ("a=-1.5e3", pd("a", Some(-1500.0), "")),
            ("a=+2", pd("a", Some(2.0), "")),
            ("a=U", pd("a", None, "")),
            ("a=U;;;;", pd("a", None, "")),
            ("a=5MB", pd("a", Some(5.0), "MB")),
            ("a=99%", pd("a", Some(99.0), "%")),
            ("a=3c", pd("a", Some(3.0), "c")),
            ("a=1,5", pd("a", Some(1.5), "")),
            ("a=.5", pd("a", Some(0.5), "")),
            ("a=5e", pd("a", Some(5.0), "e")),
            ("'disk /var'=5MB", pd("disk /var", Some(5.0), "MB")),
            ("'it''s'=1", pd("it's", Some(1.0), "")),
            ("'a=b'=1", pd("a=b", Some(1.0), "")),
            ("a b=1", pd("b", Some(1.0), "")), // `a` is a problem
        ];
        for (input, want) in cases {
            let (items, _problems) = parse_perfdata(input);
            assert_eq!(items.last(), Some(&want), "parsing {input:?}");
        }
        let (items, problems) = parse_perfdata("a=1MB;2;3;0MB;100MB");
        assert!(problems.is_empty());
        assert_eq!(items[0].max, Some(100.0));
        let (items, _) = parse_perfdata("t=1;;;0;");
        assert_eq!(
            (items[0].min, items[0].max, items[0].warn.clone()),
            (Some(0.0), None, None)
        );
    }

    #[test]
    fn malformed_items_are_reported_and_skipped() {
        let cases: &[(&str, &str)] = &[
            ("x=abc", "perfdata: cannot parse 'x=abc' (bad value)"),
            ("x=", "perfdata: cannot parse 'x=' (bad value)"),
            ("x", "perfdata: cannot parse 'x' (missing '=')"),
            ("=1", "perfdata: cannot parse '=1' (empty label)"),
            ("''=1", "perfdata: cannot parse '''=1' (empty label)"),
            (
                "'open=1",
                "perfdata: cannot parse ''open=1' (unterminated quote)",
            ),
            (
                "'q'1",
                "perfdata: cannot parse ''q'1' (missing '=' after label)",
            ),
            ("x=1;2;3;a", "perfdata: cannot parse 'x=1;2;3;a' (bad min)"),
            (
                "x=1;2;3;0;z",
                "perfdata: cannot parse 'x=1;2;3;0;z' (bad max)",
            ),
            (
                "x=1;2;3;0;1;9",
                "perfdata: cannot parse 'x=1;2;3;0;1;9' (too many fields)",
            ),
            ("x=1M2", "perfdata: cannot parse 'x=1M2' (bad unit)"),
            ("x=.", "perfdata: cannot parse 'x=.' (bad value)"),
            ("x=-", "perfdata: cannot parse 'x=-' (bad value)"),
            ("x=inf", "perfdata: cannot parse 'x=inf' (bad value)"),
            ("x=1e999", "perfdata: cannot parse 'x=1e999' (bad value)"),
        ];
        for (input, msg) in cases {
            let (items, problems) = parse_perfdata(input);
            assert!(items.is_empty(), "{input:?} parsed as {items:?}");
            assert_eq!(problems, vec![msg.to_string()], "problems of {input:?}");
        }
        // A bad item does not affect its neighbours.
        let (items, problems) = parse_perfdata("a=1 x=abc b=2");
        assert_eq!(items.len(), 2);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn problems_become_notes_in_long_output() {
        let p = parse_plugin_output("OK | x=abc\nmore");
        assert_eq!(
            p.long_output_with_problems(),
            "more\nperfdata: cannot parse 'x=abc' (bad value)"
        );
        let p = parse_plugin_output("OK | x=abc");
        assert_eq!(
            p.long_output_with_problems(),
            "perfdata: cannot parse 'x=abc' (bad value)"
        );
    }

    #[test]
    fn long_garbage_is_shortened_in_notes() {
        let garbage = "y".repeat(500);
        let (_, problems) = parse_perfdata(&garbage);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].len() < 150, "{}", problems[0]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC*") {
            let _ = parse_plugin_output(&s);
        }

        #[test]
        fn never_panics_on_perfdata_like_input(s in "[ a-z'=;|.,0-9eE+\\-U%\n\r]{0,80}") {
            let p = parse_plugin_output(&s);
            // Output never contains the separator or a newline.
            proptest::prop_assert!(!p.output.contains('|') && !p.output.contains('\n'));
        }

        #[test]
        fn well_formed_items_round_trip(
            label in "[a-z][a-z /_]{0,10}",
            value in -1.0e6f64..1.0e6,
            uom in proptest::sample::select(vec!["", "s", "ms", "%", "B", "KB", "MB", "c"]),
        ) {
            let text = format!("OK | '{}'={}{};1;2;0;100", label.replace('\'', "''"), value, uom);
            let p = parse_plugin_output(&text);
            proptest::prop_assert!(p.problems.is_empty(), "{:?}", p.problems);
            proptest::prop_assert_eq!(p.perfdata.len(), 1);
            proptest::prop_assert_eq!(&p.perfdata[0].label, &label);
            proptest::prop_assert_eq!(p.perfdata[0].value, Some(value));
            proptest::prop_assert_eq!(&p.perfdata[0].uom, uom);
        }
    }
}
