//! The result table: one [`Row`] per figure, printed as markdown or JSON.
//!
//! A row with a target says whether the figure meets it; a target miss is information for
//! the reader, never a failure of the run. A row built with [`Row::sanity`] is a check that
//! the bench itself worked (every message delivered once, every figure finite), and a failed
//! one makes `petrel-bench` exit non-zero.

use serde::Serialize;
use std::fmt::Write as _;

/// How a figure reads against its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Meets its target.
    Meets,
    /// Misses its target (see the note).
    Misses,
    /// No target: information.
    Info,
    /// A sanity check that passed.
    Ok,
    /// A sanity check that failed: the bench's own result is wrong.
    Fail,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Meets => "meets",
            Verdict::Misses => "**misses**",
            Verdict::Info => "—",
            Verdict::Ok => "ok",
            Verdict::Fail => "**FAIL**",
        }
    }
}

/// One figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// A stable machine-readable name, like `throughput.q100.rate`.
    pub key: String,
    /// The scenario it belongs to.
    pub scenario: String,
    /// What was measured.
    pub figure: String,
    /// The value (`null` in JSON when not finite).
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The target, as text.
    pub target: Option<String>,
    /// How it reads against the target.
    pub verdict: Verdict,
    /// A caveat or an explanation.
    pub note: Option<String>,
}

impl Row {
    /// A figure without a target.
    pub fn info(key: &str, scenario: &str, figure: &str, value: f64, unit: &str) -> Row {
        Row {
            key: key.to_string(),
            scenario: scenario.to_string(),
            figure: figure.to_string(),
            value,
            unit: unit.to_string(),
            target: None,
            verdict: Verdict::Info,
            note: None,
        }
    }

    /// Sets a lower bound as the target.
    pub fn at_least(mut self, min: f64, text: &str) -> Row {
        self.target = Some(text.to_string());
        self.verdict = if self.value >= min {
            Verdict::Meets
        } else {
            Verdict::Misses
        };
        self
    }

    /// Sets an upper bound as the target.
    pub fn at_most(mut self, max: f64, text: &str) -> Row {
        self.target = Some(text.to_string());
        self.verdict = if self.value <= max {
            Verdict::Meets
        } else {
            Verdict::Misses
        };
        self
    }

    /// Makes the row a sanity check of the bench itself.
    pub fn sanity(mut self, ok: bool, expected: &str) -> Row {
        self.target = Some(expected.to_string());
        self.verdict = if ok { Verdict::Ok } else { Verdict::Fail };
        self
    }

    /// Attaches a note.
    pub fn note(mut self, text: impl Into<String>) -> Row {
        self.note = Some(text.into());
        self
    }
}

/// Formats a value for the table: thousands separators for large values, three
/// significant digits for small ones.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    if v.abs() >= 100.0 || v == v.trunc() {
        let rounded = v.round() as i128;
        let digits = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if rounded < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The machine and the run, for reading the figures.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    /// `full`, `quick` or `smoke`.
    pub mode: String,
    /// UTC date and time the run started.
    pub started: String,
    /// CPUs available.
    pub cpus: usize,
    /// 1-minute load average when the run started and when it ended.
    pub load_before: Option<f64>,
    /// 1-minute load average at the end.
    pub load_after: Option<f64>,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// The relay binary measured.
    pub relay_bin: String,
}

/// Every row of a run, with the run's description and global caveats.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// About the run.
    pub run: RunInfo,
    /// The figures.
    pub rows: Vec<Row>,
    /// Caveats that apply to the whole table.
    pub caveats: Vec<String>,
}

impl Report {
    /// True when no sanity check failed and every figure is a finite number.
    pub fn sane(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.verdict != Verdict::Fail && r.value.is_finite())
    }

    /// The JSON form.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The markdown form: a header line, the table, then numbered notes and caveats.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let load = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "petrel-bench --{} · {} · {} CPUs · load {} → {} · {:.0} s\n",
            self.run.mode,
            self.run.started,
            self.run.cpus,
            load(self.run.load_before),
            load(self.run.load_after),
            self.run.seconds
        );
        let _ = writeln!(
            out,
            "| scenario | figure | value | unit | target | verdict |"
        );
        let _ = writeln!(out, "|---|---|---:|---|---|---|");
        let mut notes: Vec<&str> = Vec::new();
        for row in &self.rows {
            let mut figure = row.figure.clone();
            if let Some(note) = &row.note {
                let n = match notes.iter().position(|n| n == note) {
                    Some(i) => i + 1,
                    None => {
                        notes.push(note);
                        notes.len()
                    }
                };
                let _ = write!(figure, " [{n}]");
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.scenario,
                figure,
                format_value(row.value),
                row.unit,
                row.target.as_deref().unwrap_or(""),
                row.verdict.text()
            );
        }
        if !notes.is_empty() {
            out.push('\n');
            for (i, note) in notes.iter().enumerate() {
                let _ = writeln!(out, "{}. {note}", i + 1);
            }
        }
        if !self.caveats.is_empty() {
            out.push('\n');
            for caveat in &self.caveats {
                let _ = writeln!(out, "- {caveat}");
            }
        }
        out
    }
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc_text(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_dates() {
        assert_eq!(format_value(12_345.6), "12,346");
        assert_eq!(format_value(1.23456), "1.23");
        assert_eq!(format_value(42.0), "42");
        assert_eq!(format_value(-1_000.0), "-1,000");
        assert_eq!(format_value(f64::NAN), "n/a");
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_text(1_709_210_096), "2024-02-29 12:34 UTC");
    }
}
