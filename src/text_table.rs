//! Aligned text tables for terminals (`proxy status`, the demo's tables): columns padded
//! to their widest cell, two spaces apart, no trailing spaces.

/// Columns padded to their widest cell, two spaces apart. Control characters in a cell
/// (which may come from a peer: a region, an address, a route name) are shown escaped,
/// so no cell can move the cursor or rewrite the operator's terminal.
pub(crate) fn align(lines: &[Vec<String>]) -> String {
    align_to(lines, &[])
}

/// Like [`align`], with each column at least as wide as `widths` says: rows printed one
/// at a time (a trace's hops as they come) line up when given the same widths.
pub(crate) fn align_to(lines: &[Vec<String>], widths: &[usize]) -> String {
    let lines: Vec<Vec<String>> = lines.iter().map(|l| l.iter().map(|c| printable(c)).collect()).collect();
    let lines = &lines[..];
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max();
            widest.unwrap_or(0).max(widths.get(c).copied().unwrap_or(0))
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> =
            line.iter().enumerate().map(|(c, s)| format!("{s:<width$}", width = widths[c])).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `s` with its control characters escaped (`\u{1b}`, `\n`).
pub(crate) fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_cell_are_escaped() {
        let lines = vec![vec!["\u{1b}[2Jregion".to_string(), "a\nb".to_string()]];
        assert_eq!(align(&lines), "\\u{1b}[2Jregion  a\\nb\n");
    }

    #[test]
    fn columns_line_up_and_lines_carry_no_trailing_spaces() {
        let lines = vec![
            vec!["ID".to_string(), "RTT".to_string(), "X".to_string()],
            vec!["alpha".to_string(), "1 ms".to_string(), String::new()],
        ];
        assert_eq!(align(&lines), "ID     RTT   X\nalpha  1 ms\n");
    }
}
