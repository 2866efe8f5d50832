//! The run's figures: printed as they are measured, kept for the JSON summary and the Markdown
//! report (`--out`), and compared with an earlier summary (`--compare`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::load::LoadResult;
use crate::pct;

/// Version of the JSON summary's layout; bumped when a field changes meaning.
pub const SUMMARY_FORMAT: u32 = 1;

/// Which way a figure improves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// One scalar figure, with etcd's value where there is a peer figure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Figure {
    /// Stable id, the key `--compare` matches on: `failover.write_acked_ms.p50`.
    pub name: String,
    /// What was measured, in words.
    pub what: String,
    pub unit: String,
    pub better: Better,
    /// `null` in the JSON when nothing was measured (no operation succeeded).
    #[serde(deserialize_with = "null_as_nan")]
    pub ekka: f64,
    pub etcd: Option<f64>,
    /// ekka / etcd; `better` says which side of 1 is good for ekka.
    pub ratio: Option<f64>,
}

/// serde_json writes a NaN as `null`; read it back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Where the figures were taken.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total_mib: u64,
    /// `etcd --version`'s first line; `None` when etcd was not found.
    pub etcd: Option<String>,
    pub ekka_bin: String,
    /// `git describe --always --dirty` of the workspace the bench was built from.
    pub git: Option<String>,
    /// `/proc/loadavg`'s 1-minute figure when the run started and when it ended: above 0.5 or so
    /// on an otherwise idle machine, something else competed with the run.
    #[serde(default)]
    pub loadavg_start: f64,
    #[serde(default)]
    pub loadavg_end: f64,
}

/// The 1-minute load average; 0 when `/proc/loadavg` cannot be read.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The JSON summary (`--out PATH` writes `PATH.json`).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Summary {
    pub format: u32,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    /// The exact command line, with the `EKKA_BIN` / `ETCD_BIN` overrides in force.
    pub command: String,
    pub machine: Machine,
    pub figures: Vec<Figure>,
    /// Figure groups that failed, with the error; their figures are absent.
    pub failures: Vec<String>,
}

/// Collects the console output and the figures of one run.
pub struct Report {
    pub summary: Summary,
    log: Vec<String>,
}

impl Report {
    pub fn new(command: String, machine: Machine) -> Report {
        Report {
            summary: Summary {
                format: SUMMARY_FORMAT,
                started: utc_now(),
                command,
                machine,
                figures: Vec::new(),
                failures: Vec::new(),
            },
            log: Vec::new(),
        }
    }

    /// Prints a line and keeps it for the Markdown report.
    pub fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("{line}");
        self.log.push(line);
    }

    pub fn fail(&mut self, group: &str, err: &anyhow::Error) {
        self.say(format!("FAILED {group}: {err:#}"));
        self.summary.failures.push(format!("{group}: {err:#}"));
    }

    pub fn push(&mut self, f: Figure) {
        self.summary.figures.push(f);
    }

    /// A distribution line only, no figure kept.
    pub fn dist_line_only(&mut self, what: &str, v: &[f64], unit: &str) {
        self.dist_line(what, v, unit);
    }

    /// A distribution line, as the bench always printed it.
    fn dist_line(&mut self, what: &str, v: &[f64], unit: &str) {
        self.say(format!(
            "{what:<52} n={:<3} p50={:>8.1}{unit} p99={:>8.1}{unit} min={:>8.1}{unit} max={:>8.1}{unit}",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.99),
            pct(v, 0.0),
            pct(v, 1.0)
        ));
    }

    /// Timings (lower is better) of ekka and, where there is a peer figure, etcd: prints both
    /// and the p50 ratio; keeps p50 and p99 as figures `NAME.p50` and `NAME.p99`.
    pub fn dist(&mut self, name: &str, what: &str, unit: &str, ekka: &[f64], etcd: Option<&[f64]>) {
        self.dist_line(&format!("ekka {what} ({unit})"), ekka, unit);
        if let Some(e) = etcd {
            self.dist_line(&format!("etcd {what} ({unit})"), e, unit);
            self.say(format!(
                "ratio ekka/etcd {what} p50: {:.2}  p99: {:.2}",
                pct(ekka, 0.5) / pct(e, 0.5),
                pct(ekka, 0.99) / pct(e, 0.99)
            ));
        }
        for (q, p) in [("p50", 0.5), ("p99", 0.99)] {
            self.value(
                &format!("{name}.{q}"),
                &format!("{what}, {q}"),
                unit,
                Better::Lower,
                pct(ekka, p),
                etcd.map(|e| pct(e, p)),
            );
        }
    }

    /// One scalar figure (no line printed).
    pub fn value(
        &mut self,
        name: &str,
        what: &str,
        unit: &str,
        better: Better,
        ekka: f64,
        etcd: Option<f64>,
    ) {
        self.push(Figure {
            name: name.to_string(),
            what: what.to_string(),
            unit: unit.to_string(),
            better,
            ekka,
            etcd,
            ratio: etcd.map(|e| ekka / e),
        });
    }

    /// One data-load case: prints ekka's and etcd's lines and the ratios; keeps throughput,
    /// latency and CPU per operation as figures `NAME.*`.
    pub fn load(&mut self, name: &str, what: &str, ekka: &LoadResult, etcd: Option<&LoadResult>) {
        self.say(load_line(&format!("ekka {what}"), ekka));
        if let Some(e) = etcd {
            self.say(load_line(&format!("etcd {what}"), e));
            self.say(format!(
                "ratio ekka/etcd {what}: throughput {:.2}  (servers' CPU per op: {:.2})",
                ekka.per_sec() / e.per_sec(),
                ekka.cpu_us_per_op() / e.cpu_us_per_op()
            ));
        }
        type Get = fn(&LoadResult) -> f64;
        let parts: [(&str, &str, &str, Better, Get); 5] = [
            ("ops_per_s", "throughput", "ops/s", Better::Higher, |r| {
                r.per_sec()
            }),
            ("p50_ms", "latency p50", "ms", Better::Lower, |r| {
                pct(&r.lat, 0.5)
            }),
            ("p99_ms", "latency p99", "ms", Better::Lower, |r| {
                pct(&r.lat, 0.99)
            }),
            (
                "server_cpu_us",
                "servers' CPU per op",
                "us",
                Better::Lower,
                |r| r.cpu_us_per_op(),
            ),
            (
                "client_cpu_us",
                "client CPU per op",
                "us",
                Better::Lower,
                |r| r.client_cpu_us_per_op(),
            ),
        ];
        for (suffix, label, unit, better, get) in parts {
            self.value(
                &format!("{name}.{suffix}"),
                &format!("{what}: {label}"),
                unit,
                better,
                get(ekka),
                etcd.map(get),
            );
        }
    }

    /// Writes `PATH.json` (the summary) and `PATH.md` (command, machine, figures, comparison,
    /// console output).
    pub fn write(&self, path: &Path, comparison: Option<&str>) -> Result<()> {
        let json = path.with_extension("json");
        let md = path.with_extension("md");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&json, serde_json::to_string_pretty(&self.summary)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        std::fs::write(&md, self.markdown(comparison))
            .with_context(|| format!("writing {}", md.display()))?;
        println!("wrote {} and {}", md.display(), json.display());
        Ok(())
    }

    fn markdown(&self, comparison: Option<&str>) -> String {
        let s = &self.summary;
        let m = &s.machine;
        let mut o = String::new();
        let _ = writeln!(o, "# ekka-bench, {}\n", s.started);
        let _ = writeln!(o, "Command:\n\n```sh\n{}\n```\n", s.command);
        let _ = writeln!(o, "| machine | |\n|---|---|");
        let _ = writeln!(o, "| nproc | {} |", m.nproc);
        let _ = writeln!(o, "| kernel | {} |", m.kernel);
        let _ = writeln!(o, "| cpu | {} |", m.cpu);
        let _ = writeln!(o, "| memory | {} MiB |", m.mem_total_mib);
        let etcd = m.etcd.as_deref().unwrap_or("not found: etcd rows skipped");
        let _ = writeln!(o, "| etcd | {etcd} |");
        let _ = writeln!(o, "| ekka binary | `{}` |", m.ekka_bin);
        let _ = writeln!(o, "| git | {} |", m.git.as_deref().unwrap_or("?"));
        let _ = writeln!(
            o,
            "| load average (1 min), start / end | {:.2} / {:.2} |\n",
            m.loadavg_start, m.loadavg_end
        );
        let _ = writeln!(o, "## Figures\n");
        let _ = writeln!(o, "| figure | unit | ekka | etcd | ekka/etcd | better |");
        let _ = writeln!(o, "|---|---|---:|---:|---:|---|");
        for f in &s.figures {
            let _ = writeln!(
                o,
                "| `{}` {} | {} | {} | {} | {} | {:?} |",
                f.name,
                f.what,
                f.unit,
                num(f.ekka),
                f.etcd.map_or("-".into(), num),
                f.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                f.better
            );
        }
        if !s.failures.is_empty() {
            let _ = writeln!(o, "\n## Failures\n");
            for f in &s.failures {
                let _ = writeln!(o, "- {f}");
            }
        }
        if let Some(c) = comparison {
            let _ = writeln!(o, "\n## Comparison\n\n```\n{c}```");
        }
        let _ = writeln!(o, "\n## Output\n\n```");
        for l in &self.log {
            let _ = writeln!(o, "{l}");
        }
        let _ = writeln!(o, "```");
        o
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn load_line(what: &str, r: &LoadResult) -> String {
    format!(
        "{what}: {:.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  ({} ops, {} errors)  CPU per op: servers {:.0} us, client {:.0} us",
        r.per_sec(),
        pct(&r.lat, 0.5),
        pct(&r.lat, 0.99),
        r.ops,
        r.errors,
        r.cpu_us_per_op(),
        r.client_cpu_us_per_op()
    )
}

/// What `--compare` found.
pub struct Comparison {
    /// The printed table.
    pub text: String,
    /// Names of the figures that got worse by more than the threshold.
    pub regressions: Vec<String>,
}

/// Each figure's ekka value against `prev`'s: the change in percent, flagged `REGRESSION` when
/// it moved the bad way by more than `threshold_pct`, `better` when it moved the good way by
/// more than that. Figures in only one of the two are listed as such.
pub fn compare(prev: &Summary, cur: &Summary, threshold_pct: f64) -> Comparison {
    let mut text = String::new();
    let mut regressions = Vec::new();
    let _ = writeln!(
        text,
        "against {} ({}), threshold {threshold_pct} %",
        prev.started, prev.command
    );
    let _ = writeln!(
        text,
        "{:<44} {:>12} {:>12} {:>9}",
        "figure", "before", "now", "change"
    );
    for f in &cur.figures {
        let Some(p) = prev.figures.iter().find(|p| p.name == f.name) else {
            let _ = writeln!(text, "{:<44} {:>12} {:>12}  new", f.name, "-", num(f.ekka));
            continue;
        };
        let change = (f.ekka - p.ekka) / p.ekka.abs() * 100.0;
        let worse = match f.better {
            Better::Lower => change,
            Better::Higher => -change,
        };
        let flag = if !change.is_finite() {
            ""
        } else if worse > threshold_pct {
            regressions.push(f.name.clone());
            "REGRESSION"
        } else if worse < -threshold_pct {
            "better"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "{:<44} {:>12} {:>12} {:>+8.1}%  {flag}",
            f.name,
            num(p.ekka),
            num(f.ekka),
            change
        );
    }
    let gone = prev
        .figures
        .iter()
        .filter(|p| !cur.figures.iter().any(|f| f.name == p.name))
        .count();
    if gone > 0 {
        let _ = writeln!(text, "{gone} figure(s) of the earlier run not measured now");
    }
    let _ = writeln!(
        text,
        "{} regression(s) beyond {threshold_pct} %",
        regressions.len()
    );
    Comparison { text, regressions }
}

pub fn read_summary(path: &Path) -> Result<Summary> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&s)
        .with_context(|| format!("{} is not an ekka-bench summary", path.display()))
}

/// The current UTC time, `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, no date crate needed).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(figs: &[(&str, Better, f64)]) -> Summary {
        Summary {
            format: SUMMARY_FORMAT,
            started: "t".into(),
            command: "c".into(),
            machine: Machine::default(),
            figures: figs
                .iter()
                .map(|&(n, b, v)| Figure {
                    name: n.into(),
                    what: n.into(),
                    unit: "ms".into(),
                    better: b,
                    ekka: v,
                    etcd: None,
                    ratio: None,
                })
                .collect(),
            failures: Vec::new(),
        }
    }

    #[test]
    fn compare_flags_only_changes_the_bad_way_beyond_the_threshold() {
        let prev = summary(&[
            ("lat", Better::Lower, 100.0),
            ("tput", Better::Higher, 1000.0),
            ("rss", Better::Lower, 10.0),
            ("old", Better::Lower, 1.0),
        ]);
        let cur = summary(&[
            ("lat", Better::Lower, 111.0),   // 11 % slower: regression
            ("tput", Better::Higher, 950.0), // 5 % fewer: noise
            ("rss", Better::Lower, 5.0),     // halved: better
            ("new", Better::Lower, 1.0),
        ]);
        let c = compare(&prev, &cur, 10.0);
        assert_eq!(c.regressions, vec!["lat".to_string()]);
        assert!(c.text.contains("better"), "{}", c.text);
        assert!(
            c.text.contains("new")
                && c.text
                    .contains("1 figure(s) of the earlier run not measured"),
            "{}",
            c.text
        );

        let cur = summary(&[("tput", Better::Higher, 850.0)]);
        assert_eq!(compare(&prev, &cur, 10.0).regressions, vec!["tput"]);
    }

    #[test]
    fn summary_round_trips_through_json() {
        let s = summary(&[("lat", Better::Lower, 1.5)]);
        let back: Summary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.figures, s.figures);
    }

    #[test]
    fn a_figure_with_nothing_measured_reads_back() {
        let s = summary(&[("lat", Better::Lower, f64::NAN)]);
        let back: Summary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert!(back.figures[0].ekka.is_nan());
        assert_eq!(compare(&s, &back, 10.0).regressions, Vec::<String>::new());
    }

    #[test]
    fn utc_now_is_a_plausible_timestamp() {
        let t = utc_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
