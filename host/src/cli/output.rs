//! Output conventions shared by the subcommands: aligned tables for people, one JSON value per
//! line for scripts, colours only when stdout is a terminal (and `NO_COLOR` is unset), and a
//! progress line on stderr only when stderr is a terminal.

use std::io::{IsTerminal as _, Write as _};

use evhost::broker::EntryId;

/// A text style, applied only when colours are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// No styling.
    Plain,
    /// Bold (table headers).
    Bold,
    /// Dimmed (secondary details).
    Dim,
    /// Red (failures).
    Red,
    /// Green (healthy states).
    Green,
    /// Yellow (warnings, work in progress).
    Yellow,
}

impl Style {
    fn code(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Bold => Some("1"),
            Style::Dim => Some("2"),
            Style::Red => Some("31"),
            Style::Green => Some("32"),
            Style::Yellow => Some("33"),
        }
    }
}

/// Whether stdout gets colours: a terminal, and `NO_COLOR` unset.
pub fn colors_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` in `style` when `colors` is on.
pub fn paint(text: &str, style: Style, colors: bool) -> String {
    match style.code() {
        Some(code) if colors => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_string(),
    }
}

/// `text` cut to `width` characters, with `…` marking the cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Numbers.
    Right,
}

/// One cell: text and style.
#[derive(Debug, Clone)]
pub struct Cell {
    text: String,
    style: Style,
}

impl Cell {
    /// The cell's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cell's style.
    pub fn style(&self) -> Style {
        self.style
    }

    /// A cell in `style`.
    pub fn styled(text: impl Into<String>, style: Style) -> Self {
        Cell {
            text: text.into(),
            style,
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell::styled(text, Style::Plain)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::styled(text, Style::Plain)
    }
}

/// A table printed with aligned columns; the last column is never padded.
#[derive(Debug)]
pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[(&'static str, Align)]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra ones ignored).
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The table as lines, styled when `colors` is on.
    pub fn render(&self, colors: bool) -> Vec<String> {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self
            .headers
            .iter()
            .map(|(name, _)| name.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.text.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = (&str, Style)>| {
            let mut out = String::new();
            for (index, (text, style)) in cells.enumerate().take(columns) {
                let (width, align) = (widths[index], self.headers[index].1);
                let pad = " ".repeat(width.saturating_sub(text.chars().count()));
                if index > 0 {
                    out.push_str("  ");
                }
                let painted = paint(text, style, colors);
                match align {
                    Align::Right => {
                        out.push_str(&pad);
                        out.push_str(&painted);
                    }
                    Align::Left if index + 1 == columns => out.push_str(&painted),
                    Align::Left => {
                        out.push_str(&painted);
                        out.push_str(&pad);
                    }
                }
            }
            out.trim_end().to_string()
        };
        let mut lines = vec![line(
            &mut self.headers.iter().map(|(name, _)| (*name, Style::Bold)),
        )];
        for row in &self.rows {
            let blank = Cell::from("");
            let mut cells = (0..columns).map(|index| {
                let cell = row.get(index).unwrap_or(&blank);
                (cell.text.as_str(), cell.style)
            });
            lines.push(line(&mut cells));
        }
        lines
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        let colors = colors_enabled();
        for line in self.render(colors) {
            println!("{line}");
        }
    }
}

/// Prints `value` as one line of JSON on stdout.
pub fn json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

/// A size for people: `512 B`, `3.4 KiB`, `208.0 MiB`, `1.2 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The time of an entry id (its milliseconds), RFC 3339 with millisecond precision.
pub fn entry_time(id: EntryId) -> String {
    evhost::stream_stats::entry_time(id).unwrap_or_else(|| "-".into())
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `3h12m`, `2d04h`.
pub fn human_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    let secs = duration.as_secs();
    match secs {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{:.1}s", duration.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// A progress line on stderr, redrawn in place; silent when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    drawn: bool,
}

impl Progress {
    /// A progress line, enabled when stderr is a terminal.
    pub fn new() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Replaces the line with `text`.
    pub fn update(&mut self, text: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K{text}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        }
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        table.row(vec!["payment".into(), "12".into(), "ok".into()]);
        table.row(vec!["a".into(), Cell::styled("3", Style::Red)]);
        assert_eq!(
            table.render(false),
            vec!["NAME      N  NOTE", "payment  12  ok", "a         3"]
        );
        assert!(table.render(true)[2].contains("\x1b[31m3\x1b[0m"));
    }

    #[test]
    fn formats_sizes_for_people() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 * 1024 + 512), "3.5 KiB");
        assert_eq!(format_bytes(208 * 1024 * 1024), "208.0 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(
            entry_time(EntryId::new(1_700_000_000_123, 0)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            human_duration(std::time::Duration::from_millis(850)),
            "850ms"
        );
        assert_eq!(human_duration(std::time::Duration::from_secs(245)), "4m05s");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
