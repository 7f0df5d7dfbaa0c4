//! Text as people read it in a terminal: byte counts and rates in SI
//! units, and cells that cannot forge rows or drive the terminal. Shared by
//! the pods table and the zones summary; a leaf.

use std::fmt::Write as _;

/// Rates and byte counts as people read them: `10M`, `1.5G`, `812k`.
pub fn si(v: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "k"),
    ];
    for (div, unit) in UNITS {
        if v >= div {
            let x = v as f64 / div as f64;
            return if x >= 100.0 || (x.fract() * 10.0).round() == 0.0 {
                format!("{}{unit}", x.round())
            } else {
                format!("{x:.1}{unit}")
            };
        }
    }
    v.to_string()
}

/// A table cell as a terminal shows it safely: control characters (a
/// newline would split a row, an ESC would drive the terminal) and the
/// invisible format characters that reorder or hide text are escaped, as
/// `\n`, `\t`, `\r`, `\x1b` or `\u{202e}`; a backslash is doubled so an
/// escape cannot be forged. Other characters, any script, are kept.
pub fn cell(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || invisible(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Format characters that change how the text around them is shown
/// without showing themselves: zero-width ones, line and paragraph
/// separators, bidirectional controls, the BOM.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}
