//! One rendering of every report as a text table, CSV or JSON, so the CLI
//! and the API print the same columns.

use serde::Serialize;

use crate::AuditError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(AuditError::Invalid(format!(
                "unknown format {s:?}: use table, json or csv"
            ))),
        }
    }
}

/// Rows of strings under headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Columns padded to their widest cell.
    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                if i + 1 < cells.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
            out
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }

    /// RFC 4180: fields with a comma, quote or line break are quoted.
    pub fn to_csv(&self) -> String {
        fn field(s: &str) -> String {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<String>| {
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        };
        line(self.headers.iter().map(|h| field(h)).collect());
        for row in &self.rows {
            line(row.iter().map(|c| field(c)).collect());
        }
        out
    }
}

/// A report that can be printed in every [`Format`].
pub trait Report: Serialize {
    fn table(&self) -> Table;
}

pub fn render<R: Report>(report: &R, format: Format) -> Result<String, AuditError> {
    Ok(match format {
        Format::Table => report.table().to_text(),
        Format::Csv => report.table().to_csv(),
        Format::Json => serde_json::to_string_pretty(report)
            .map_err(|e| AuditError::Format(format!("cannot encode the report: {e}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut t = Table::new(&["a", "b"]);
        t.push(vec!["plain".into(), "with, comma \"q\"".into()]);
        assert_eq!(t.to_csv(), "a,b\r\nplain,\"with, comma \"\"q\"\"\"\r\n");
    }

    #[test]
    fn text_columns_line_up() {
        let mut t = Table::new(&["app", "n"]);
        t.push(vec!["wiki".into(), "1".into()]);
        t.push(vec!["x".into(), "22".into()]);
        assert_eq!(t.to_text(), "app   n\nwiki  1\nx     22\n");
    }
}
