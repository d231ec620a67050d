//! Aligned text tables for terminals (`proxy status`, the demo's tables): columns padded
//! to their widest cell, two spaces apart, no trailing spaces.

/// Columns padded to their widest cell, two spaces apart.
pub(crate) fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_lines_carry_no_trailing_spaces() {
        let lines = vec![
            vec!["ID".to_string(), "RTT".to_string(), "X".to_string()],
            vec!["alpha".to_string(), "1 ms".to_string(), String::new()],
        ];
        assert_eq!(align(&lines), "ID     RTT   X\nalpha  1 ms\n");
    }
}
